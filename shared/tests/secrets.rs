//! The Secrets Manager cache against moto server.

use std::time::Duration;

use serde_json::json;
use testkit::{Stack, sdk_config};
use wxa_shared::secret_store::{AppSecrets, SecretCache, SecretsError};

async fn put(stack: &Stack, secret_id: &str, value: &str) {
    let sm = stack.secretsmanager();
    let body = json!({"app_secret": value}).to_string();
    if sm
        .create_secret()
        .name(secret_id)
        .secret_string(&body)
        .send()
        .await
        .is_err()
    {
        sm.put_secret_value()
            .secret_id(secret_id)
            .secret_string(&body)
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_secret_is_cached_for_its_ttl_and_never_printed() {
    let stack = Stack::start().await;
    let id = testkit::unique("cache");
    put(&stack, &id, "first").await;
    let cache = SecretCache::<AppSecrets>::new(stack.secretsmanager(), &id, Duration::from_secs(300));
    let first = cache.get().await.unwrap();
    assert_eq!(first.app_secret.expose(), "first");
    assert_eq!(format!("{first:?}"), "AppSecrets { app_secret: *** }");
    put(&stack, &id, "second").await;
    assert_eq!(
        cache.get().await.unwrap().app_secret.expose(),
        "first",
        "served from memory within the TTL"
    );
    // A rejection by WeChat re-reads it at once.
    let fresh = cache
        .refresh_after_rejection(&first)
        .await
        .unwrap()
        .expect("it changed");
    assert_eq!(fresh.app_secret.expose(), "second");
    // A second caller holding the same stale value does not read again and gets the new one.
    assert_eq!(
        cache
            .refresh_after_rejection(&first)
            .await
            .unwrap()
            .unwrap()
            .app_secret
            .expose(),
        "second"
    );

    let uncached = SecretCache::<AppSecrets>::new(stack.secretsmanager(), &id, Duration::ZERO);
    put(&stack, &id, "third").await;
    assert_eq!(uncached.get().await.unwrap().app_secret.expose(), "third");
}

#[tokio::test]
async fn a_failure_is_not_cached() {
    let stack = Stack::start().await;
    let id = testkit::unique("late");
    let cache = SecretCache::<AppSecrets>::new(stack.secretsmanager(), &id, Duration::from_secs(300));
    assert!(matches!(cache.get().await, Err(SecretsError::NotFound(_))));
    put(&stack, &id, "now-there").await;
    assert_eq!(cache.get().await.unwrap().app_secret.expose(), "now-there");
}

#[tokio::test]
async fn a_malformed_secret_is_reported_without_its_value() {
    let stack = Stack::start().await;
    let id = testkit::unique("bad");
    let sm = stack.secretsmanager();
    sm.create_secret()
        .name(&id)
        .secret_string(r#"{"app_secret": 12345678}"#)
        .send()
        .await
        .unwrap();
    let err = SecretCache::<AppSecrets>::new(sm.clone(), &id, Duration::ZERO)
        .get()
        .await
        .unwrap_err();
    assert!(matches!(err, SecretsError::Malformed { .. }), "{err}");
    assert!(!err.to_string().contains("12345678"), "{err}");
    sm.put_secret_value()
        .secret_id(&id)
        .secret_string(r#"{"appsecret": "typo"}"#)
        .send()
        .await
        .unwrap();
    let err = SecretCache::<AppSecrets>::new(sm, &id, Duration::ZERO)
        .get()
        .await
        .unwrap_err();
    // The typo is named (a field name, never a value).
    assert!(err.to_string().contains("unknown field `appsecret`"), "{err}");
}

#[tokio::test]
async fn an_unreachable_secrets_manager_is_unavailable_not_missing() {
    let closed = testkit::free_port();
    let sdk = sdk_config(&format!("http://127.0.0.1:{closed}")).await;
    let cache = SecretCache::<AppSecrets>::new(
        aws_sdk_secretsmanager::Client::new(&sdk),
        "wxa/app",
        Duration::from_secs(300),
    );
    let err = cache.get().await.unwrap_err();
    assert!(matches!(err, SecretsError::Unavailable(_)), "{err}");
    let api: wxa_shared::ApiError = err.into();
    assert_eq!((api.status.as_u16(), api.code), (503, "secrets_unavailable"));
}
