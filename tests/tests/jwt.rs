//! JWT bearer tokens (issue 14): a broker over TLS trusting the keys of a
//! JWKS file (an HMAC key and an ES256 key made in the test). A token
//! signed by a listed key, for the broker's issuer and audience, within its
//! validity, is its `sub` with its `roles` — which permission rules then
//! judge; an expired, not-yet-valid, wrong-audience, wrong-issuer,
//! wrong-signature, unsigned (`alg: none`), unknown-key or malformed token
//! is refused `UNAUTHENTICATED` with a message saying which, and changes nothing.

use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use sluice_client::proto as pb;
use sluice_client::{Admin, ConnectOptions};
use sluice_tests::pki::{self, TestCa};
use sluice_tests::TestBroker;
use tonic::Code;

const ISSUER: &str = "https://id.example.test";
const AUDIENCE: &str = "sluice";
const HMAC_SECRET: &[u8] = b"a 32-byte HMAC secret for tests!";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Claims for `sub` with `roles`, valid from a minute ago for an hour.
fn claims(sub: &str, roles: &[&str]) -> serde_json::Value {
    serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "roles": roles, "iat": now(), "nbf": now() - 60, "exp": now() + 3600})
}

fn hs256(claims: &serde_json::Value) -> anyhow::Result<String> {
    let header = Header { kid: Some("hmac-1".into()), ..Header::new(Algorithm::HS256) };
    Ok(encode(&header, claims, &EncodingKey::from_secret(HMAC_SECRET))?)
}

#[tokio::test]
async fn signed_tokens_authenticate_as_their_subject_and_bad_ones_are_refused() -> anyhow::Result<()> {
    let ca = TestCa::new("sluice test CA")?;
    let dir = tempfile::tempdir()?;
    let server = ca.issue("broker", &["127.0.0.1"])?;
    let cert = pki::write(dir.path(), "server.pem", &server.cert)?;
    let key = pki::write(dir.path(), "server.key", &server.key)?;
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let point = ec.public_key_raw();
    let (x, y) = (&point[1..33], &point[33..65]);
    let jwks = serde_json::json!({"keys": [
        {"kty": "oct", "kid": "hmac-1", "alg": "HS256", "k": b64(HMAC_SECRET)},
        {"kty": "EC", "kid": "ec-1", "alg": "ES256", "crv": "P-256", "x": b64(x), "y": b64(y)},
    ]});
    let jwks = pki::write(dir.path(), "jwks.json", &jwks.to_string())?;
    let args = [
        "--tls-cert",
        cert.to_str().unwrap_or_default(),
        "--tls-key",
        key.to_str().unwrap_or_default(),
        "--auth-jwks",
        jwks.to_str().unwrap_or_default(),
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
        "--superusers",
        "role:platform-admins",
    ];
    let broker = TestBroker::start_tls(&args, &ca.pem).await?;
    let as_token = |token: &str| -> anyhow::Result<Admin> {
        Ok(Admin::new(ConnectOptions::new().tls_ca(&ca.pem).token(token)?.connect(&broker.addr)?))
    };

    // A superuser by the role its token carries; HMAC and ES256 keys both verify.
    let admin = as_token(&hs256(&claims("ops-1", &["platform-admins"]))?)?;
    admin.create_topic("orders", 1, pb::TopicConfig::default()).await?;
    let header = Header { kid: Some("ec-1".into()), ..Header::new(Algorithm::ES256) };
    let es = encode(
        &header,
        &claims("ops-2", &["platform-admins"]),
        &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes())?,
    )?;
    assert_eq!(as_token(&es)?.list_topics().await?.len(), 1, "an ES256 token verifies");
    // A subject without the role is judged by permission rules: none yet.
    let plain = as_token(&hs256(&claims("reader", &[]))?)?;
    let denied = plain.describe_topic("orders").await.expect_err("no rule");
    assert_eq!(denied.code(), Some(Code::PermissionDenied), "{denied}");
    assert!(denied.to_string().contains("`reader`"), "{denied}");

    let mut expired = claims("ops-1", &["platform-admins"]);
    expired["exp"] = (now() - 3600).into();
    let mut early = claims("ops-1", &["platform-admins"]);
    early["nbf"] = (now() + 3600).into();
    let mut audience = claims("ops-1", &["platform-admins"]);
    audience["aud"] = "someone-else".into();
    let mut issuer = claims("ops-1", &["platform-admins"]);
    issuer["iss"] = "https://evil.test".into();
    let mut no_exp = claims("ops-1", &["platform-admins"]);
    no_exp.as_object_mut().map(|c| c.remove("exp"));
    let forged = encode(
        &Header { kid: Some("hmac-1".into()), ..Header::new(Algorithm::HS256) },
        &claims("ops-1", &["platform-admins"]),
        &EncodingKey::from_secret(b"not the broker's secret at all!!"),
    )?;
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"hmac-1"}"#),
        b64(claims("ops-1", &["platform-admins"]).to_string().as_bytes())
    );
    let unknown_key = encode(
        &Header { kid: Some("nobody".into()), ..Header::new(Algorithm::HS256) },
        &claims("ops-1", &[]),
        &EncodingKey::from_secret(HMAC_SECRET),
    )?;
    // An HS256 token "signed" with the EC key's id: the key's own algorithm is ES256.
    let confused = encode(
        &Header { kid: Some("ec-1".into()), ..Header::new(Algorithm::HS256) },
        &claims("ops-1", &[]),
        &EncodingKey::from_secret(HMAC_SECRET),
    )?;
    for (what, token, says) in [
        ("expired", hs256(&expired)?, "expired"),
        ("not yet valid", hs256(&early)?, "not valid yet"),
        ("another audience", hs256(&audience)?, "audience"),
        ("another issuer", hs256(&issuer)?, "issuer"),
        ("without exp", hs256(&no_exp)?, "lacks exp"),
        ("forged", forged, "signature"),
        ("unsigned", unsigned, "well-formed"),
        ("unknown key", unknown_key, "key id"),
        ("algorithm confusion", confused, "algorithm"),
        ("malformed", "eyJ.eyJ.x".to_owned(), "well-formed"),
    ] {
        let refused = as_token(&token)?.create_topic("intruder", 1, pb::TopicConfig::default()).await.expect_err(what);
        assert_eq!(refused.code(), Some(Code::Unauthenticated), "{what}: {refused}");
        assert!(refused.to_string().contains(says), "{what}: {refused}");
    }
    let names: Vec<String> = admin.list_topics().await?.into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["orders"], "no refused token created anything");
    Ok(())
}
