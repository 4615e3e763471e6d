//! Authentication against real registries: htpasswd basic auth over TLS, and Docker's token
//! flow with a token issuer whose signed JWTs the registry validates.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use vch_registry::{Credentials, DockerConfig};
use vch_testbed::Registry;

use crate::support::{Pki, TokenIssuer, runtime, tls_client};

#[test]
fn htpasswd_basic_auth_over_tls() {
    let pki = Pki::new();
    let reg = Registry::builder()
        .tls(pki.cert(), pki.key())
        .htpasswd_user("alice", "s3cret")
        .start()
        .unwrap();
    let rt = runtime();
    let anon = tls_client(&reg, &pki, Credentials::Anonymous);
    let ping = rt.block_on(anon.ping()).unwrap();
    assert_eq!(ping.status, 401);
    assert_eq!(ping.auth, ["basic"]);
    let err = rt.block_on(anon.tags("any/repo", None)).unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(err.to_string().contains("log in"), "{err}");

    let wrong = tls_client(&reg, &pki, Credentials::basic("alice", "nope"));
    assert_eq!(
        rt.block_on(wrong.push_blob("a/b", Bytes::from_static(b"x")))
            .unwrap_err()
            .status(),
        Some(401)
    );

    let alice = tls_client(&reg, &pki, Credentials::basic("alice", "s3cret"));
    rt.block_on(async {
        let d = alice
            .push_blob("team/app", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(alice.blob_head("team/app", &d).await.unwrap(), Some(5));
    });
}

#[test]
fn token_auth_with_signed_jwts_cached_per_scope() {
    let issuer = TokenIssuer::start("bob", "hunter2", 300);
    let pki = Pki::new();
    let reg = Registry::builder()
        .tls(pki.cert(), pki.key())
        .token_auth(issuer.auth())
        .start()
        .unwrap();
    let rt = runtime();

    // Credentials from a Docker config file.
    let cfg: DockerConfig = serde_json::from_value(serde_json::json!({
        "auths": { reg.addr(): { "auth": vch_registry::Client::encode_auth("bob", "hunter2") } }
    }))
    .unwrap();
    let creds = rt.block_on(cfg.credentials(&reg.addr())).unwrap();
    let bob = tls_client(&reg, &pki, creds);
    let ping = rt.block_on(bob.ping()).unwrap();
    assert_eq!(
        (ping.status, ping.auth.clone()),
        (401, vec!["bearer".to_owned()])
    );
    rt.block_on(async {
        let d = bob
            .push_blob("team/app", Bytes::from_static(b"token content"))
            .await
            .unwrap();
        let issued = issuer.issued.load(Ordering::SeqCst);
        // The push scope's token is reused for later pushes to the same repository.
        for i in 0..3 {
            bob.push_blob("team/app", Bytes::from(format!("more {i}")))
                .await
                .unwrap();
        }
        assert_eq!(
            issuer.issued.load(Ordering::SeqCst),
            issued,
            "tokens were not cached"
        );
        assert_eq!(bob.blob_head("team/app", &d).await.unwrap(), Some(13));
    });

    // Anonymous: the issuer grants pull only, so a push is denied.
    let anon = tls_client(&reg, &pki, Credentials::Anonymous);
    let err = rt
        .block_on(anon.push_blob("team/app", Bytes::from_static(b"nope")))
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    // Wrong password: the token server refuses, named in the error.
    let bad = tls_client(&reg, &pki, Credentials::basic("bob", "wrong"));
    let err = rt.block_on(bad.tags("team/app", None)).unwrap_err();
    assert!(
        err.to_string().contains("authentication at http://"),
        "{err}"
    );
}

#[test]
fn expired_tokens_are_refreshed() {
    // Tokens valid for 1 s (less than the refresh margin): every request fetches a new one,
    // and none fails for an expired token.
    let issuer = TokenIssuer::start("bob", "pw", 1);
    let pki = Pki::new();
    let reg = Registry::builder()
        .tls(pki.cert(), pki.key())
        .token_auth(issuer.auth())
        .start()
        .unwrap();
    let bob = tls_client(&reg, &pki, Credentials::basic("bob", "pw"));
    let rt = runtime();
    rt.block_on(async {
        let d = bob
            .push_blob("x/y", Bytes::from_static(b"a"))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(bob.blob_head("x/y", &d).await.unwrap(), Some(1));
    });
    assert!(issuer.issued.load(Ordering::SeqCst) >= 2);
}
