//! Merchant transfers to a user's wallet (商家转账, the 2025 version where the user confirms in
//! the mini-program): the three WeChat Pay calls, each signed and its answer verified like every
//! APIv3 call (`PayClient::v3_retried_as`). The rules (what is recorded when) are
//! `crate::transfer`'s.
//!
//! A sensitive field (`user_name`) is sealed with RSA-OAEP (SHA-1) under WeChat Pay's public key
//! or platform certificate ([`Merchant::encryption_key`]), and the request names that key in
//! `Wechatpay-Serial`.

use reqwest::Method;

use super::Merchant;
use super::client::{PayClient, PayError};

pub const TRANSFER_BILLS_PATH: &str = "/v3/fund-app/mch-transfer/transfer-bills";

/// A transfer bill as WeChat Pay answers it (create, query, cancel) and as a
/// `MCHTRANSFER.BILL.FINISHED` notification carries it (decrypted).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct TransferBill {
    pub out_bill_no: String,
    /// ACCEPTED, PROCESSING, WAIT_USER_CONFIRM, TRANSFERING, SUCCESS, FAIL, CANCELING, CANCELLED.
    pub state: String,
    #[serde(default)]
    pub transfer_bill_no: Option<String>,
    /// What `wx.requestMerchantTransfer` takes as `package` (in WAIT_USER_CONFIRM).
    #[serde(default)]
    pub package_info: Option<String>,
    #[serde(default)]
    pub create_time: Option<String>,
    #[serde(default)]
    pub update_time: Option<String>,
    #[serde(default)]
    pub fail_reason: Option<String>,
    #[serde(default)]
    pub mch_id: Option<String>,
    #[serde(default)]
    pub transfer_amount: Option<u64>,
    #[serde(default)]
    pub openid: Option<String>,
}

/// A sensitive field sealed for WeChat Pay, and the id of the key it is sealed with (sent as
/// `Wechatpay-Serial`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    pub ciphertext: String,
    pub key_id: String,
}

/// Seals `plaintext` (a user's real name) for WeChat Pay with the merchant's preferred WeChat
/// Pay key.
pub fn seal(merchant: &Merchant, plaintext: &str) -> Result<Sealed, PayError> {
    let (key_id, key) = merchant.encryption_key().ok_or_else(|| {
        PayError::NotConfigured("the pay secret has no platform_keys to encrypt user_name with".into())
    })?;
    let ciphertext = key
        .encrypt_sensitive(plaintext)
        .ok_or_else(|| PayError::NotConfigured(format!("platform_keys {key_id} cannot encrypt (not an RSA key?)")))?;
    Ok(Sealed {
        ciphertext,
        key_id: key_id.to_owned(),
    })
}

impl PayClient {
    /// Creates a transfer bill (`request` as WeChat Pay documents it; `user_name` already
    /// sealed, `wechatpay_serial` the id of its key). Idempotent at WeChat Pay on `out_bill_no`
    /// with the same fields: a retry answers the same bill (with its `package_info`).
    pub async fn create_transfer(
        &self,
        merchant: &Merchant,
        request: &serde_json::Value,
        wechatpay_serial: Option<&str>,
    ) -> Result<TransferBill, PayError> {
        self.v3_retried_as(
            merchant,
            Method::POST,
            TRANSFER_BILLS_PATH.to_owned(),
            Some(request),
            wechatpay_serial,
        )
        .await?
        .json()
    }

    /// A transfer bill as WeChat Pay knows it (`NotFound` when it does not).
    pub async fn query_transfer(&self, merchant: &Merchant, out_bill_no: &str) -> Result<TransferBill, PayError> {
        let path = format!("{TRANSFER_BILLS_PATH}/out-bill-no/{out_bill_no}");
        self.v3_retried_as(merchant, Method::GET, path, None, None)
            .await?
            .json()
    }

    /// Cancels a bill the user has not confirmed yet: answered `CANCELING` (then `CANCELLED`).
    pub async fn cancel_transfer(&self, merchant: &Merchant, out_bill_no: &str) -> Result<TransferBill, PayError> {
        let path = format!("{TRANSFER_BILLS_PATH}/out-bill-no/{out_bill_no}/cancel");
        self.v3_retried_as(merchant, Method::POST, path, None, None)
            .await?
            .json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pay::PaySecrets;

    fn merchant(platform_keys: serde_json::Value) -> Merchant {
        let secrets: PaySecrets =
            serde_json::from_value(serde_json::json!({ "mchid": "1900000001", "platform_keys": platform_keys }))
                .unwrap();
        Merchant::parse(&secrets).unwrap()
    }

    #[test]
    fn the_public_key_is_preferred_to_a_certificate_during_a_switch() {
        let cert = include_str!("../../../tools/wechat-sim/src/platform_cert.pem");
        let public = crate::pay::keys::pem_to_der(cert, "CERTIFICATE")
            .and_then(|der| crate::pay::keys::spki_of_certificate(&der))
            .map(|spki| wechat_sim::pay::to_pem("PUBLIC KEY", &spki))
            .unwrap();
        let both = merchant(serde_json::json!([
            {"id": "5157F09EFDC096DE15EBE81A47057A72", "certificate": cert},
            {"id": "PUB_KEY_ID_0114", "public_key": public},
        ]));
        let sealed = seal(&both, "张三").unwrap();
        assert_eq!(sealed.key_id, "PUB_KEY_ID_0114");
        assert!(!sealed.ciphertext.contains("张三"));
        let certificate_only = merchant(serde_json::json!([
            {"id": "5157F09EFDC096DE15EBE81A47057A72", "certificate": cert},
        ]));
        assert_eq!(
            seal(&certificate_only, "张三").unwrap().key_id,
            "5157F09EFDC096DE15EBE81A47057A72"
        );
        assert!(matches!(
            seal(&merchant(serde_json::json!([])), "张三"),
            Err(PayError::NotConfigured(_))
        ));
    }

    #[test]
    fn a_finished_notification_reads_as_a_bill() {
        let bill: TransferBill = serde_json::from_str(
            r#"{"out_bill_no":"B1","transfer_bill_no":"1330000","state":"FAIL","mch_id":"1900000001",
                "transfer_amount":100,"openid":"o_a","fail_reason":"TRANSFER_RISK",
                "create_time":"2026-11-26T12:00:00+08:00","update_time":"2026-11-26T12:01:00+08:00"}"#,
        )
        .unwrap();
        assert_eq!((bill.state.as_str(), bill.transfer_amount), ("FAIL", Some(100)));
        assert_eq!(bill.fail_reason.as_deref(), Some("TRANSFER_RISK"));
    }
}
