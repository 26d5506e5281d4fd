//! Who may call: Google-signed OIDC ID tokens, or a shared secret.
//!
//! Pub/Sub push subscriptions and Eventarc send `Authorization: Bearer <ID token>` signed by
//! Google (RS256). A component outside Cloud Run's IAM front end must verify it itself
//! (GOOGLE-APIS.md §4.4): signature against the JWKS, `iss`, `aud` = AUDIENCE, `exp`,
//! `email` ∈ `ALLOWED_INVOKERS` and `email_verified`. The email check matters most: anyone can
//! obtain a Google-signed token for any audience.
//!
//! The JWT handling is deliberately small (split, base64url, serde) around the `rsa` crate's
//! RSASSA-PKCS1-v1_5 verification with SHA-256, which keeps the component under its size budget;
//! a JWT crate would pull in key formats and algorithms the trigger must reject anyway. Only
//! public data goes through the RSA operation, so the Marvin timing advisory against `rsa`
//! (RUSTSEC-2023-0071, about decryption with a private key) does not apply.

use base64::Engine as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Accepted `iss` values of Google ID tokens.
pub const GOOGLE_ISSUERS: &[&str] = &["https://accounts.google.com", "accounts.google.com"];
/// Clock skew tolerated on `exp`.
pub const LEEWAY_SECS: i64 = 30;
/// Longer bearer tokens are rejected before any parsing (Google ID tokens are ~1 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// RSA keys shorter than this are refused even if a JWKS offers them.
pub const MIN_RSA_BITS: usize = 2048;
/// Header carrying the shared secret in `AUTH_MODE=token`.
pub const TOKEN_HEADER: &str = "x-trigger-token";

/// Why a caller was refused; answered 401 with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

fn deny(msg: impl Into<String>) -> AuthError {
    AuthError(msg.into())
}

/// RSA verification keys by `kid`, checked (size, exponent) when the set is parsed.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: Vec<(String, RsaPublicKey)>,
}

impl Jwks {
    /// The key for `kid`, if the set has it.
    pub fn key(&self, kid: &str) -> Option<&RsaPublicKey> {
        self.keys.iter().find(|(k, _)| k == kid).map(|(_, key)| key)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No usable key at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

fn b64url(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    // Tokens use unpadded base64url; some JWKS publishers pad, so tolerate '='.
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('='))
}

/// Parses a JWKS document, keeping the RS256-capable RSA keys that have a `kid`. Keys of other
/// types are skipped; a document with no usable key is an error.
pub fn parse_jwks(bytes: &[u8]) -> Result<Jwks, String> {
    let set: JwkSet =
        serde_json::from_slice(bytes).map_err(|e| format!("JWKS is not a key set: {e}"))?;
    let mut keys = Vec::new();
    for k in set.keys {
        let usable = k.kty == "RSA"
            && k.alg.as_deref().is_none_or(|a| a == "RS256")
            && k.usage.as_deref().is_none_or(|u| u == "sig");
        let (Some(kid), Some(n), Some(e), true) = (k.kid, k.n, k.e, usable) else {
            continue;
        };
        let (Ok(n), Ok(e)) = (b64url(&n), b64url(&e)) else {
            continue;
        };
        let Ok(key) = RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e))
        else {
            continue;
        };
        if key.size() * 8 >= MIN_RSA_BITS {
            keys.push((kid, key));
        }
    }
    if keys.is_empty() {
        return Err("JWKS has no usable RS256 key".into());
    }
    Ok(Jwks { keys })
}

/// A bearer token split into its parts, header checked; the signature is not verified yet.
#[derive(Debug, Clone)]
pub struct UnverifiedToken<'a> {
    pub kid: String,
    signing_input: &'a str,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

#[derive(Deserialize)]
struct JwtHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Extracts the bearer token from an `Authorization` header value.
pub fn bearer(authorization: Option<&str>) -> Result<&str, AuthError> {
    let v = authorization.ok_or_else(|| deny("missing Authorization: Bearer token"))?;
    let (scheme, token) = v
        .trim()
        .split_once(' ')
        .ok_or_else(|| deny("Authorization header is not \"Bearer <token>\""))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(deny("Authorization scheme is not Bearer"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(deny("empty bearer token"));
    }
    Ok(token)
}

/// Splits and decodes a JWT and checks its header (RS256 with a `kid`), so the caller knows
/// which key to fetch. Rejects `alg: none`, HMAC and everything else up front.
pub fn parse_token(token: &str) -> Result<UnverifiedToken<'_>, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(deny("bearer token too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(deny(
            "bearer token is not a JWT (three dot-separated parts)",
        ));
    };
    let header_bytes = b64url(h).map_err(|_| deny("JWT header is not base64url"))?;
    let header: JwtHeader =
        serde_json::from_slice(&header_bytes).map_err(|_| deny("JWT header is not JSON"))?;
    if header.alg != "RS256" {
        return Err(deny(format!(
            "JWT alg {:?} is not RS256",
            header.alg.chars().take(20).collect::<String>()
        )));
    }
    let kid = header
        .kid
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .ok_or_else(|| deny("JWT header has no kid"))?;
    let payload = b64url(p).map_err(|_| deny("JWT payload is not base64url"))?;
    let signature = b64url(s).map_err(|_| deny("JWT signature is not base64url"))?;
    Ok(UnverifiedToken {
        kid,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload,
        signature,
    })
}

/// What the component needs to know about an accepted OIDC caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub email: String,
    /// Unix seconds.
    pub exp: i64,
}

/// The expected values of an OIDC token.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub audience: &'a str,
    /// Lower-case emails.
    pub allowed_invokers: &'a [String],
    /// Unix seconds.
    pub now: i64,
}

/// Verifies the signature with `key`, then the claims.
pub fn verify(
    t: &UnverifiedToken<'_>,
    key: &RsaPublicKey,
    expect: Expect<'_>,
) -> Result<Caller, AuthError> {
    let digest = Sha256::digest(t.signing_input.as_bytes());
    if key
        .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &t.signature)
        .is_err()
    {
        return Err(deny("JWT signature does not verify"));
    }

    let claims: Value =
        serde_json::from_slice(&t.payload).map_err(|_| deny("JWT payload is not JSON"))?;
    let str_claim = |k: &str| claims.get(k).and_then(Value::as_str);

    let iss = str_claim("iss").unwrap_or("");
    if !GOOGLE_ISSUERS.contains(&iss) {
        return Err(deny(format!("issuer {iss:?} is not Google")));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == expect.audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(expect.audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(deny("audience does not match AUDIENCE"));
    }
    let exp = claims
        .get("exp")
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
        .ok_or_else(|| deny("JWT has no numeric exp"))?;
    if exp + LEEWAY_SECS < expect.now {
        return Err(deny("token expired"));
    }
    let email = str_claim("email")
        .ok_or_else(|| deny("token has no email claim"))?
        .to_ascii_lowercase();
    let verified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    if !verified {
        return Err(deny("token email is not verified"));
    }
    if !expect.allowed_invokers.contains(&email) {
        return Err(deny(format!("caller {email} is not in ALLOWED_INVOKERS")));
    }
    Ok(Caller { email, exp })
}

/// Compares the `X-Trigger-Token` header with the configured secret in constant time (both
/// sides hashed first, so neither the length nor the content leaks through timing).
pub fn check_shared_secret(presented: Option<&str>, secret: &str) -> Result<(), AuthError> {
    let presented = presented.ok_or_else(|| deny(format!("missing {TOKEN_HEADER} header")))?;
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(secret.as_bytes());
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err(deny(format!("{TOKEN_HEADER} does not match TRIGGER_TOKEN")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{
        AUDIENCE, INVOKER, b64url, good_claims, now, other_key, test_key, with, without,
    };
    use serde_json::json;

    fn allowed() -> Vec<String> {
        vec![INVOKER.to_owned()]
    }

    fn check(token: &str) -> Result<Caller, AuthError> {
        let jwks = parse_jwks(&test_key().jwks()).unwrap();
        let t = parse_token(token)?;
        let key = jwks.key(&t.kid).ok_or_else(|| deny("unknown kid"))?;
        let allowed = allowed();
        verify(
            &t,
            key,
            Expect {
                audience: AUDIENCE,
                allowed_invokers: &allowed,
                now: now(),
            },
        )
    }

    #[test]
    fn a_google_signed_token_for_an_allowed_invoker_passes() {
        let c = check(&test_key().sign(&good_claims())).unwrap();
        assert_eq!(c.email, INVOKER);
        // Upper-case email and the issuer without scheme are accepted too.
        let claims = with(&good_claims(), "email", json!(INVOKER.to_uppercase()));
        let claims = with(&claims, "iss", json!("accounts.google.com"));
        assert!(check(&test_key().sign(&claims)).is_ok());
        let claims = with(&good_claims(), "aud", json!(["x", AUDIENCE]));
        assert!(check(&test_key().sign(&claims)).is_ok());
    }

    #[test]
    fn each_claim_is_enforced() {
        let k = test_key();
        let g = good_claims();
        let cases = [
            (with(&g, "aud", json!("https://other.example/")), "audience"),
            (without(&g, "aud"), "audience"),
            (with(&g, "iss", json!("https://evil.example")), "issuer"),
            (with(&g, "exp", json!(now() - 3600)), "expired"),
            (without(&g, "exp"), "exp"),
            (
                with(&g, "email", json!("intruder@evil.example")),
                "ALLOWED_INVOKERS",
            ),
            (without(&g, "email"), "email"),
            (with(&g, "email_verified", json!(false)), "not verified"),
            (without(&g, "email_verified"), "not verified"),
        ];
        for (claims, want) in cases {
            let e = check(&k.sign(&claims)).unwrap_err();
            assert!(e.0.contains(want), "want {want:?}, got {e}");
        }
        // Within the leeway an expired token still passes.
        assert!(check(&k.sign(&with(&g, "exp", json!(now() - 5)))).is_ok());
    }

    #[test]
    fn forged_and_malformed_tokens_are_refused() {
        let k = test_key();
        let g = good_claims();
        // Signed by another key under the same kid.
        let e = check(&other_key().sign(&g)).unwrap_err();
        assert!(e.0.contains("signature"), "{e}");
        // Payload swapped after signing.
        let t = k.sign(&g);
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = b64url(with(&g, "email", json!("x@y")).to_string().as_bytes());
        parts[1] = &forged;
        assert!(check(&parts.join(".")).unwrap_err().0.contains("signature"));
        // alg none and HS256 never get to a key.
        for alg in ["none", "HS256", "RS512", "PS256"] {
            let t = k.sign_with_header(&json!({"alg": alg, "kid": k.kid}), &g);
            assert!(check(&t).unwrap_err().0.contains("not RS256"), "{alg}");
        }
        let t = k.sign_with_header(&json!({"alg": "RS256"}), &g);
        assert!(check(&t).unwrap_err().0.contains("kid"));
        let t = k.sign_with_header(&json!({"alg": "RS256", "kid": "nope"}), &g);
        assert!(check(&t).unwrap_err().0.contains("unknown kid"));
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.??.**",
            &"a".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        let e = check(&format!(
            "{}.{}.{}",
            b64url(b"{}"),
            b64url(b"{}"),
            b64url(b"x")
        ))
        .unwrap_err();
        assert!(e.0.contains("alg") || e.0.contains("JSON"), "{e}");
    }

    #[test]
    fn damaged_signatures_are_refused() {
        let k = test_key();
        let t = k.sign(&good_claims());
        let (input, sig) = t.rsplit_once('.').unwrap();
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        let n = rsa::traits::PublicKeyParts::n(&k.key).to_bytes_be();
        let mut flipped = sig.clone();
        flipped[100] ^= 0x10;
        let mut longer = sig.clone();
        longer.push(0);
        for (what, bad) in [
            ("a flipped bit", flipped),
            ("one byte short", sig[1..].to_vec()),
            ("one byte long", longer),
            ("the modulus itself", n.clone()),
            ("above the modulus", vec![0xff; n.len()]),
            ("empty", Vec::new()),
        ] {
            let e = check(&format!("{input}.{}", b64url(&bad))).unwrap_err();
            assert!(e.0.contains("signature"), "{what}: {e}");
        }
        assert!(check(&format!("{input}.{}", b64url(&sig))).is_ok());
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(Some("bearer  abc ")).unwrap(), "abc");
        assert!(bearer(None).unwrap_err().0.contains("missing"));
        assert!(bearer(Some("Basic abc")).unwrap_err().0.contains("Bearer"));
        assert!(bearer(Some("Bearer")).is_err());
        assert!(bearer(Some("Bearer ")).is_err());
    }

    #[test]
    fn jwks_keeps_only_usable_rsa_keys() {
        let jwks = parse_jwks(&test_key().jwks()).unwrap();
        assert_eq!(jwks.len(), 1);
        assert!(jwks.key("ec-1").is_none());
        assert!(parse_jwks(br#"{"keys":[]}"#).is_err());
        assert!(parse_jwks(b"nope").is_err());
        // A 1024-bit key is below the minimum.
        let small = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        let doc = json!({"keys": [{"kty": "RSA", "kid": "small",
            "n": b64url(&rsa::traits::PublicKeyParts::n(&small).to_bytes_be()),
            "e": b64url(&rsa::traits::PublicKeyParts::e(&small).to_bytes_be())}]});
        assert!(parse_jwks(doc.to_string().as_bytes()).is_err());
        // A key for another algorithm is skipped.
        let mut jwk = test_key().jwk();
        jwk["alg"] = json!("RS512");
        assert!(parse_jwks(json!({"keys": [jwk]}).to_string().as_bytes()).is_err());
    }

    #[test]
    fn shared_secret_is_compared_exactly() {
        let s = "0123456789abcdef-secret";
        assert!(check_shared_secret(Some(s), s).is_ok());
        assert!(check_shared_secret(Some("0123456789abcdef-secreT"), s).is_err());
        assert!(check_shared_secret(Some(""), s).is_err());
        assert!(check_shared_secret(Some(&format!("{s} ")), s).is_err());
        assert!(
            check_shared_secret(None, s)
                .unwrap_err()
                .0
                .contains("missing")
        );
    }
}
