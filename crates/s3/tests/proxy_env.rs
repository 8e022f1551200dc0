//! The proxy of a mapping is used for every request, loopback included, whatever the
//! environment says: `NO_PROXY`/`no_proxy` listing 127.0.0.1 and localhost, and `HTTP_PROXY`
//! pointing elsewhere, change nothing. (Its own test binary: it sets process-wide variables.)

mod common;
use common::*;
use slipstream_s3::probe;
use slipstream_storage::config::Secret;
use slipstream_storage::StorageError;

#[tokio::test]
async fn proxy_environment_is_ignored() {
    let s = services();
    let bucket = bucket(&s, "proxyenv").await;
    let dead = closed_port().await;
    for (name, value) in [
        ("NO_PROXY", "127.0.0.1,localhost,*"),
        ("no_proxy", "127.0.0.1,localhost,*"),
        ("HTTP_PROXY", &format!("http://{dead}")),
        ("HTTPS_PROXY", &format!("http://{dead}")),
        ("ALL_PROXY", &format!("http://{dead}")),
    ] {
        std::env::set_var(name, value);
    }
    let mut c = config(&s, &bucket);
    // No proxy in the mapping: direct, although HTTP_PROXY names a dead proxy.
    probe(&c).await.unwrap();
    // A proxy in the mapping: used for the loopback endpoint although NO_PROXY lists it
    // (the wrong password proves the request reached the proxy).
    c.proxy_host = Some(s.proxy_host.clone());
    c.proxy_port = Some(s.proxy_port);
    c.proxy_user_name = Some(s.proxy_user.clone());
    c.proxy_password = Some(Secret("wrong-password".into()));
    match probe(&c).await {
        Err(StorageError::Backend(m)) => {
            assert!(m.contains("proxy refused the credentials"), "{m}")
        }
        other => panic!("expected the proxy to refuse, got {other:?}"),
    }
    c.proxy_password = Some(Secret(s.proxy_password.clone()));
    probe(&c).await.unwrap();
}
