//! digestAuth's checks, answered as a client answers a challenge.

use super::*;

/// HA1 of `test:traefik:test`, as `htdigest` writes it.
const TEST: &str = "test:traefik:a2688e031edb4be6a3797f3882655c05";

/// Decodes a middleware with these `users`; the spec and the errors and warnings, as shown.
fn decode_users(users: &[&str]) -> (Option<Spec>, String) {
    let mut c = Checker::new(Default::default());
    let users = toml::Value::Array(users.iter().map(|u| toml::Value::from(*u)).collect());
    let raw = toml::Value::Table(toml::map::Map::from_iter([("users".to_string(), users)]));
    let spec = decode(raw, "http.middlewares.d.digestauth", &mut c);
    let (errors, warnings) = c.take();
    (spec, errors.iter().chain(&warnings).map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))
}

fn auth(users: &[&str]) -> DigestAuth {
    DigestAuth::new(&decode_users(users).0.expect("valid"))
}

fn challenge(auth: &DigestAuth) -> HashMap<String, String> {
    let response = auth.refuse(false);
    let value = response.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().to_string();
    params(value.strip_prefix("Digest ").unwrap()).into_iter().collect()
}

/// The Authorization header a client sends for `GET uri` with `password`, count `nc`.
fn answer(challenge: &HashMap<String, String>, user: &str, password: &str, uri: &str, nc: u32) -> String {
    let ha1 = md5_hex(&format!("{user}:{}:{password}", challenge["realm"]));
    let ha2 = md5_hex(&format!("GET:{uri}"));
    let nc = format!("{nc:08x}");
    let response = md5_hex(&format!("{ha1}:{}:{nc}:0a4f113b:auth:{ha2}", challenge["nonce"]));
    format!(
        r#"Digest username="{user}", realm="{}", nonce="{}", uri="{uri}", qop=auth, nc={nc}, cnonce="0a4f113b", response="{response}", opaque="{}""#,
        challenge["realm"], challenge["nonce"], challenge["opaque"]
    )
}

fn get(uri: &str, authorization: &str) -> Request<()> {
    Request::get(uri).header(header::AUTHORIZATION, authorization).body(()).unwrap()
}

#[test]
fn the_challenge_has_traefiks_form() {
    let auth = auth(&[TEST]);
    let value = auth.refuse(false).headers()[header::WWW_AUTHENTICATE].to_str().unwrap().to_string();
    let (nonce, opaque) = (auth.nonce(now()), auth.opaque.clone());
    assert_eq!(
        value,
        format!(r#"Digest realm="traefik", nonce="{nonce}", opaque="{opaque}", algorithm="MD5", qop="auth""#)
    );
    assert!(auth.refuse(true).headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .contains(r#"stale="true", algorithm"#));
}

#[test]
fn the_right_answer_passes_once_per_count() {
    let auth = auth(&[TEST]);
    let c = challenge(&auth);
    let now = now();
    assert_eq!(auth.check(&get("/a?b=1", &answer(&c, "test", "test", "/a?b=1", 1)), now).ok().as_deref(), Some("test"));
    assert!(auth.check(&get("/a?b=1", &answer(&c, "test", "test", "/a?b=1", 1)), now).is_err(), "a replayed count");
    assert!(auth.check(&get("/a?b=1", &answer(&c, "test", "test", "/a?b=1", 2)), now).is_ok());
    let lower = auth.check(&get("/a?b=1", &answer(&c, "test", "test", "/a?b=1", 1)), now);
    assert!(lower.is_err_and(|r| r.stale), "a lower count asks for a fresh nonce");
}

#[test]
fn wrong_answers_are_refused() {
    let auth = auth(&[TEST]);
    let c = challenge(&auth);
    let now = now();
    assert!(auth.check(&get("/", &answer(&c, "test", "wrong", "/", 1)), now).is_err());
    assert!(auth.check(&get("/", &answer(&c, "nobody", "test", "/", 1)), now).is_err());
    assert!(auth.check(&get("/admin", &answer(&c, "test", "test", "/", 1)), now).is_err(), "signed for another uri");
    let mut forged = c.clone();
    forged.insert("nonce".into(), format!("{now:016x}{}", "0".repeat(32)));
    assert!(auth.check(&get("/", &answer(&forged, "test", "test", "/", 1)), now).is_err_and(|r| !r.stale));
    let mut opaque = c.clone();
    opaque.insert("opaque".into(), "x".into());
    assert!(auth.check(&get("/", &answer(&opaque, "test", "test", "/", 1)), now).is_err());
}

#[test]
fn an_old_nonce_is_stale_and_the_fresh_one_passes() {
    let auth = auth(&[TEST]);
    let c = challenge(&auth);
    let later = now() + NONCE_LIFETIME.as_secs() + 1;
    assert!(auth.check(&get("/", &answer(&c, "test", "test", "/", 1)), later).is_err_and(|r| r.stale));
}

#[test]
fn another_replica_with_the_same_users_honours_the_nonce() {
    let (a, b) = (auth(&[TEST]), auth(&[TEST]));
    let c = challenge(&a);
    assert!(b.check(&get("/", &answer(&c, "test", "test", "/", 1)), now()).is_ok());
    let changed = auth(&["test:traefik:b2688e031edb4be6a3797f3882655c05"]);
    assert!(changed.check(&get("/", &answer(&c, "test", "test", "/", 1)), now()).is_err(), "new users, new key");
}

#[test]
fn users_must_be_user_realm_ha1_in_the_realm() {
    let (spec, report) = decode_users(&["test:a2688e031edb4be6a3797f3882655c05"]);
    assert!(spec.is_none() && report.contains("user:realm:HA1"), "{report}");
    let (spec, report) = decode_users(&["test:traefik:secret"]);
    assert!(spec.is_none() && report.contains("32 hex digits") && !report.contains("secret"), "{report}");
    let (spec, report) = decode_users(&[TEST, "x:elsewhere:a2688e031edb4be6a3797f3882655c05"]);
    assert_eq!(spec.unwrap().users.len(), 1);
    assert!(report.contains("never matches"), "{report}");
}

#[test]
fn quoted_values_keep_their_commas_and_escapes() {
    let p = params(r#"username="a,b", realm="x\"y", qop=auth"#);
    assert_eq!(p[0], ("username".to_string(), "a,b".to_string()));
    assert_eq!(p[1].1, "x\"y");
    assert_eq!(p[2].1, "auth");
}
