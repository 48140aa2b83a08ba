//! WeChat Pay: the merchant's keys (the pay secret in Secrets Manager), APIv3 and APIv2 formats,
//! and the HTTP client. The orders table is `store::orders`.

pub mod client;
pub mod keys;
pub mod transfer;
pub mod v2;
pub mod v3;

use serde::Deserialize;

use crate::redacted::Secret;
use keys::{SigningKey, VerifyingKey};

/// The pay secret (`PAY_SECRET_ID`), a JSON object readable only by the functions that pay.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PaySecrets {
    pub mchid: String,
    /// Serial of the merchant API certificate (APIv3).
    #[serde(default)]
    pub merchant_serial_no: Option<String>,
    /// `apiclient_key.pem`, PKCS#8 (APIv3).
    #[serde(default)]
    pub merchant_private_key: Option<Secret>,
    #[serde(default)]
    pub apiv3_key: Option<Secret>,
    #[serde(default)]
    pub apiv2_key: Option<Secret>,
    /// WeChat Pay's keys: `{"id": "PUB_KEY_ID_…", "public_key": PEM}` or
    /// `{"id": "<certificate serial>", "certificate": PEM}`; during a switch, both.
    #[serde(default)]
    pub platform_keys: Vec<PlatformKeyConfig>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlatformKeyConfig {
    pub id: String,
    #[serde(default)]
    pub public_key: Option<String>,
    #[serde(default)]
    pub certificate: Option<String>,
}

/// The merchant's parsed keys, built once per secret read.
pub struct Merchant {
    pub mchid: String,
    pub serial_no: Option<String>,
    pub signing_key: Option<SigningKey>,
    pub apiv3_key: Option<Secret>,
    pub apiv2_key: Option<Secret>,
    pub platform_keys: Vec<(String, VerifyingKey)>,
}

impl std::fmt::Debug for Merchant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.platform_keys.iter().map(|(id, _)| id.as_str()).collect();
        write!(
            f,
            "Merchant {{ mchid: {}, platform_keys: {ids:?}, keys: *** }}",
            self.mchid
        )
    }
}

impl crate::secret_store::SecretDocument for Merchant {
    fn parse(text: &str) -> Result<Self, String> {
        let secrets: PaySecrets =
            serde_json::from_str(text).map_err(|e| crate::secret_store::describe_json_error(&e))?;
        Merchant::parse(&secrets)
    }
}

impl Merchant {
    /// Parses the keys, naming the first one that is unusable (never its value).
    pub fn parse(secrets: &PaySecrets) -> Result<Self, String> {
        let signing_key = match &secrets.merchant_private_key {
            Some(pem) => Some(
                SigningKey::from_pem(pem.expose()).ok_or("merchant_private_key is not a PKCS#8 RSA private key PEM")?,
            ),
            None => None,
        };
        if let Some(key) = &secrets.apiv3_key
            && key.expose().len() != 32
        {
            return Err("apiv3_key must be 32 characters".into());
        }
        let mut platform_keys = Vec::new();
        for entry in &secrets.platform_keys {
            let pem = entry
                .public_key
                .as_deref()
                .or(entry.certificate.as_deref())
                .unwrap_or_default();
            let key = VerifyingKey::from_pem(pem)
                .ok_or_else(|| format!("platform_keys {}: not a public key or certificate PEM", entry.id))?;
            platform_keys.push((entry.id.clone(), key));
        }
        Ok(Self {
            mchid: secrets.mchid.clone(),
            serial_no: secrets.merchant_serial_no.clone(),
            signing_key,
            apiv3_key: secrets.apiv3_key.clone(),
            apiv2_key: secrets.apiv2_key.clone(),
            platform_keys,
        })
    }

    pub fn platform_keys(&self) -> impl Iterator<Item = (&str, &VerifyingKey)> {
        self.platform_keys.iter().map(|(id, key)| (id.as_str(), key))
    }

    /// The key a sensitive field is sealed with, and its id (sent as `Wechatpay-Serial`): the
    /// WeChat Pay public key (`PUB_KEY_ID_…`) when configured, else the first platform
    /// certificate. During a switch both are configured and the public key is the one to use.
    pub fn encryption_key(&self) -> Option<(&str, &VerifyingKey)> {
        self.platform_keys()
            .find(|(id, _)| id.starts_with("PUB_KEY_ID_"))
            .or_else(|| self.platform_keys().next())
    }
}
