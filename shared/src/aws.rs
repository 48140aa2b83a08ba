//! AWS SDK configuration: bounded timeouts and retries for DynamoDB and Secrets Manager.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{ConfigLoader, SdkConfig};

/// Loads the SDK config from `loader` with our timeouts and retry policy. In Lambda the loader
/// is `aws_config::defaults(..)` (role credentials, region, and `AWS_ENDPOINT_URL` locally).
pub async fn load_sdk_config(loader: ConfigLoader) -> SdkConfig {
    loader
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_attempt_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
        // Standard mode: 3 attempts with jittered backoff, throttling included.
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}

pub async fn sdk_config_from_env() -> SdkConfig {
    load_sdk_config(aws_config::defaults(aws_config::BehaviorVersion::latest())).await
}
