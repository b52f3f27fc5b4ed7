use super::*;
use serde_json::json;

fn auth(issuer: Option<&str>, audience: Option<&str>) -> Authenticator {
    Authenticator::new(AuthConfig {
        secret: "s".repeat(32),
        issuer: issuer.map(Into::into),
        audience: audience.map(Into::into),
        leeway_secs: crate::auth::DEFAULT_LEEWAY_SECS,
    })
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers build the value in the call"
)]
fn sign_with(header: Header, claims: Value) -> String {
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret("s".repeat(32).as_bytes()),
    )
    .unwrap()
}

fn sign(claims: Value) -> String {
    sign_with(Header::new(Algorithm::HS256), claims)
}

fn exp() -> u64 {
    now_secs() + 60
}

/// The client-facing text of a refusal: one of three fixed phrases.
async fn refusal(a: &Authenticator, token: &str) -> String {
    let e = a.authenticate(token).await.unwrap_err();
    let shown = e.to_string();
    assert!(
        ["invalid token", "token expired", "missing token"].contains(&shown.as_str()),
        "{shown}"
    );
    shown
}

#[tokio::test]
async fn a_minted_token_verifies_to_its_subject_and_expiry() {
    let a = auth(Some("app"), Some("broker"));
    let identity = a.authenticate(&a.mint("user-a", 60)).await.unwrap();
    assert_eq!(identity.user, UserId::new("user-a"));
    // Refused from the second after `exp` plus the leeway.
    let end = 60 + DEFAULT_LEEWAY_SECS + 1;
    assert!((now_secs() + end - 1..=now_secs() + end).contains(&identity.expires_at));
    assert_eq!(
        a.verify_bearer(Some(&format!("Bearer {}", a.mint("u", 60))))
            .await,
        Ok(UserId::new("u"))
    );
}

#[tokio::test]
async fn wrong_secret_issuer_audience_expiry_and_alg_none_are_rejected() {
    let a = auth(Some("app"), Some("broker"));
    let other_secret = Authenticator::new(AuthConfig {
        secret: "x".repeat(32),
        issuer: Some("app".into()),
        audience: Some("broker".into()),
        leeway_secs: crate::auth::DEFAULT_LEEWAY_SECS,
    });
    assert_eq!(
        refusal(&a, &other_secret.mint("u", 60)).await,
        "invalid token"
    );
    let evil = auth(Some("evil"), Some("broker")).mint("u", 60);
    assert_eq!(refusal(&a, &evil).await, "invalid token");
    let other_aud = auth(Some("app"), Some("other")).mint("u", 60);
    assert_eq!(refusal(&a, &other_aud).await, "invalid token");
    // Configured claims must be present, not only equal when present.
    assert!(
        a.verify(&auth(Some("app"), None).mint("u", 60))
            .await
            .is_err()
    );
    assert!(
        a.verify(&auth(None, Some("broker")).mint("u", 60))
            .await
            .is_err()
    );

    let expired =
        sign(json!({"sub": "u", "exp": now_secs() - 3600, "iss": "app", "aud": "broker"}));
    assert_eq!(refusal(&a, &expired).await, "token expired");
    assert_eq!(a.authenticate(&expired).await, Err(AuthError::Expired));

    // {"alg":"none"} with the same claims and no signature.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo0MTAyNDQ0ODAwfQ.";
    assert_eq!(refusal(&auth(None, None), none).await, "invalid token");
    assert_eq!(a.verify("").await, Err(AuthError::MissingToken));
    assert_eq!(a.verify_bearer(None).await, Err(AuthError::MissingToken));
    assert!(a.verify_bearer(Some("Basic abc")).await.is_err());
}

#[tokio::test]
async fn an_audience_list_is_accepted_and_a_future_nbf_is_not() {
    let a = auth(None, Some("broker"));
    let exp = exp();
    let listed = sign(json!({"sub": "u", "exp": exp, "aud": ["other", "broker"]}));
    assert_eq!(a.verify(&listed).await, Ok(UserId::new("u")));
    let elsewhere = sign(json!({"sub": "u", "exp": exp, "aud": ["other"]}));
    assert!(a.verify(&elsewhere).await.is_err());
    let early = sign(json!({"sub": "u", "exp": exp, "aud": "broker", "nbf": exp}));
    assert!(a.verify(&early).await.is_err());
}

#[tokio::test]
async fn a_crit_header_is_rejected() {
    let a = auth(None, None);
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["exp-ext".into()]);
    let token = sign_with(header, json!({"sub": "u", "exp": exp()}));
    assert_eq!(refusal(&a, &token).await, "invalid token");
    assert!(
        a.authenticate(&token)
            .await
            .unwrap_err()
            .detail()
            .contains("crit")
    );
}

#[tokio::test]
async fn an_issuer_list_is_rejected_even_when_it_names_the_issuer() {
    let a = auth(Some("app"), None);
    let listed = sign(json!({"sub": "u", "exp": exp(), "iss": ["evil", "app"]}));
    assert_eq!(refusal(&a, &listed).await, "invalid token");
    let number = sign(json!({"sub": "u", "exp": exp(), "iss": 7}));
    assert_eq!(refusal(&auth(None, None), &number).await, "invalid token");
    let plain = sign(json!({"sub": "u", "exp": exp(), "iss": "app"}));
    assert_eq!(a.verify(&plain).await, Ok(UserId::new("u")));
}

#[tokio::test]
async fn blank_control_character_and_oversized_subjects_are_rejected() {
    let a = auth(None, None);
    for sub in [
        json!(" "),
        json!(""),
        json!("\t\n"),
        json!("a\u{0}b"),
        json!("a\nb"),
        json!("a\u{7f}"),
        json!("x".repeat(MAX_SUBJECT_BYTES + 1)),
        json!(12),
        json!(["u"]),
        // Nothing visible: a zero-width space, a no-break space, a byte order mark.
        json!("\u{200b}"),
        json!("\u{a0}\u{feff}"),
        // A line or paragraph separator, or a format character, anywhere.
        json!("alice\u{2028}"),
        json!("al\u{2029}ice"),
        json!("al\u{200d}ice"),
        json!("\u{202e}ecila"),
    ] {
        let token = sign(json!({"sub": sub, "exp": exp()}));
        assert_eq!(refusal(&a, &token).await, "invalid token", "sub {sub}");
    }
    let longest = "é".repeat(MAX_SUBJECT_BYTES / 2);
    let token = sign(json!({"sub": longest, "exp": exp()}));
    assert_eq!(a.verify(&token).await, Ok(UserId::new(longest)));
}

#[tokio::test]
async fn visible_unicode_subjects_are_accepted() {
    let a = auth(None, None);
    for sub in ["ä", "名前", "user 1", "a-b_c.d@e"] {
        let token = sign(json!({"sub": sub, "exp": exp()}));
        assert_eq!(a.verify(&token).await, Ok(UserId::new(sub)), "{sub}");
    }
}

/// A token signed over the JSON texts given, as they are.
fn sign_texts(header: &str, claims: &str) -> String {
    use base64::Engine as _;
    let b64 = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
    let signed = format!("{}.{}", b64(header), b64(claims));
    let key = EncodingKey::from_secret("s".repeat(32).as_bytes());
    let signature = jsonwebtoken::crypto::sign(signed.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{signed}.{signature}")
}

#[tokio::test]
async fn a_key_given_twice_in_the_header_or_the_claims_is_refused() {
    let a = auth(None, None);
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let claims = format!(r#"{{"sub":"u","exp":{},"roles":["backend"]}}"#, exp());
    // The texts as written verify: the check reads them, not a re-encoding.
    let plain = sign_texts(header, &claims);
    assert_eq!(a.verify(&plain).await, Ok(UserId::new("u")));
    for (header, claims) in [
        (
            header.to_owned(),
            claims.replace(
                r#""roles":["backend"]"#,
                r#""roles":[],"roles":["backend"]"#,
            ),
        ),
        (
            header.to_owned(),
            claims.replace(r#""sub":"u""#, r#""sub":"u","sub":"admin""#),
        ),
        (
            r#"{"alg":"HS256","alg":"HS256"}"#.to_owned(),
            claims.clone(),
        ),
        (
            header.to_owned(),
            claims.replace("}", r#","x":{"a":1,"a":2}}"#),
        ),
    ] {
        let token = sign_texts(&header, &claims);
        assert_eq!(
            refusal(&a, &token).await,
            "invalid token",
            "{header} {claims}"
        );
    }
}

#[tokio::test]
async fn ill_typed_exp_nbf_and_iat_are_rejected() {
    let a = auth(None, None);
    let later = exp();
    for claims in [
        json!({"sub": "u", "exp": later.to_string()}),
        json!({"sub": "u", "exp": -5}),
        json!({"sub": "u", "exp": null}),
        json!({"sub": "u", "exp": true}),
        json!({"sub": "u", "exp": [later]}),
        json!({"sub": "u"}),
        json!({"sub": "u", "exp": later, "nbf": "0"}),
        json!({"sub": "u", "exp": later, "nbf": -1}),
        json!({"sub": "u", "exp": later, "iat": "now"}),
    ] {
        let token = sign(claims.clone());
        assert_eq!(refusal(&a, &token).await, "invalid token", "{claims}");
    }
}

#[tokio::test]
async fn malformed_and_oversized_tokens_say_only_invalid_token() {
    let a = auth(Some("app"), None);
    // A payload that is a JSON array: jsonwebtoken's message names its internal types.
    let array = format!(
        "eyJhbGciOiJIUzI1NiJ9.{}.c2ln",
        "WzEsMl0" // [1,2]
    );
    for token in [
        "garbage",
        "a.b.c",
        array.as_str(),
        "eyJhbGciOiJSUzUxMiJ9.e30.c2ln",
    ] {
        assert_eq!(refusal(&a, token).await, "invalid token", "{token}");
    }
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(refusal(&a, &huge).await, "invalid token");
}

#[tokio::test]
async fn an_app_verifier_replaces_the_default() {
    struct Fixed;
    #[async_trait]
    impl TokenVerifier for Fixed {
        async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
            match token {
                "let-me-in" => Ok(Identity {
                    user: UserId::new("fixed"),
                    roles: Vec::new(),
                    expires_at: u64::MAX,
                }),
                _ => Err(AuthError::invalid("not the fixed token")),
            }
        }
    }
    let a = Authenticator::with_verifier(Fixed);
    assert_eq!(a.verify("let-me-in").await, Ok(UserId::new("fixed")));
    assert_eq!(refusal(&a, "other").await, "invalid token");
    // A token of the default HS256 verifier means nothing to it.
    assert!(a.verify(&auth(None, None).mint("u", 60)).await.is_err());
}

#[tokio::test]
async fn the_roles_claim_is_read_and_must_be_a_list_of_strings() {
    let a = auth(None, None);
    let backend = a
        .identify(&a.mint_with_roles("svc", 60, &["backend"]))
        .await
        .unwrap();
    assert_eq!(backend.roles, vec!["backend".to_owned()]);
    assert_eq!(
        a.identify(&a.mint("u", 60)).await.unwrap().roles,
        Vec::<String>::new()
    );
    for roles in [json!("backend"), json!([1]), json!({"a": "b"})] {
        let malformed = sign(json!({"sub": "u", "exp": exp(), "roles": roles}));
        assert!(matches!(
            a.identify(&malformed).await,
            Err(AuthError::InvalidToken(_))
        ));
    }
}

#[test]
fn init_payload_token_forms() {
    assert_eq!(
        token_from_init_payload(Some(&json!({"token": "t"}))),
        Some("t")
    );
    assert_eq!(
        token_from_init_payload(Some(&json!({"authorization": "Bearer t"}))),
        Some("t")
    );
    assert_eq!(
        token_from_init_payload(Some(&json!({"Authorization": "bearer t"}))),
        Some("t")
    );
    assert_eq!(token_from_init_payload(Some(&json!({"other": 1}))), None);
    assert_eq!(token_from_init_payload(None), None);
}
