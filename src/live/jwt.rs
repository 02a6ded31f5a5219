//! Upbit's request signature: a JWT (HS256) with `access_key`, a fresh `nonce` and, when the
//! request has parameters, `query_hash` = SHA-512 hex of the url-encoded query string with
//! `query_hash_alg` = `SHA512`. Built with hmac + sha2 + base64, no JWT crate.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

/// The claims Upbit reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub access_key: String,
    pub nonce: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_hash_alg: Option<String>,
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// `k=v&k2=v2`, url-encoded, in the order given: the string `query_hash` covers.
pub fn query_string(params: &[(&str, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

/// SHA-512 of `query`, lowercase hex.
pub fn query_hash(query: &str) -> String {
    Sha512::digest(query.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A random nonce in the UUID v4 layout. `getrandom` failing means the OS has no entropy
/// source, which nothing here can work around: the error goes to the caller.
pub fn nonce() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot encode the JWT claims: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the secret key cannot key HMAC-SHA256: {0}")]
    Key(String),
}

/// The signed token for `claims`.
pub fn token(secret: &str, claims: &Claims) -> Result<String, TokenError> {
    let payload = serde_json::to_string(claims)?;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|e| TokenError::Key(e.to_string()))?;
    mac.update(input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(format!("{input}.{sig}"))
}

/// The claims of `token` if its HS256 signature verifies with `secret` (what Upbit does;
/// tests use it as the server side).
pub fn verify(token: &str, secret: &str) -> Option<Claims> {
    let (input, sig) = token.rsplit_once('.')?;
    let (header, payload) = input.split_once('.')?;
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    if header.get("alg")?.as_str()? != "HS256" {
        return None;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(input.as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(sig).ok()?).ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_with_its_secret_only() {
        let claims = Claims {
            access_key: "ak".into(),
            nonce: nonce().unwrap(),
            query_hash: Some(query_hash("identifier=x")),
            query_hash_alg: Some("SHA512".into()),
        };
        let t = token("secret", &claims).unwrap();
        assert_eq!(verify(&t, "secret"), Some(claims));
        assert_eq!(verify(&t, "other"), None);
        let mut forged = t.clone();
        forged.push('A');
        assert_eq!(verify(&forged, "secret"), None);
    }

    #[test]
    fn query_hash_is_sha512_hex_of_the_encoded_query() {
        let q = query_string(&[("market", "KRW-BTC".into()), ("price", "10000".into())]);
        assert_eq!(q, "market=KRW-BTC&price=10000");
        // sha512("abc"), the FIPS 180-2 test vector.
        assert!(query_hash("abc").starts_with("ddaf35a193617aba"));
        assert_eq!(query_hash("abc").len(), 128);
    }

    #[test]
    fn nonces_are_fresh_and_uuid_shaped() {
        let (a, b) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
