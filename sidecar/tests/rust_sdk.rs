//! The official Rust SDK's client (`dapr::Client`) against a started sidecar: state save, get,
//! bulk save, delete, ETag conflict, TTL and secrets with scopes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use dapr::client::{ClientOptions, Etag, StateItem};

#[tokio::test]
async fn rust_sdk_state_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.json");
    std::fs::write(
        &secrets,
        r#"{"db": {"password": "s3cret", "user": "admin"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("components.yaml"),
        format!(
            "kind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n---\nkind: Component\nmetadata:\n  name: localsecrets\nspec:\n  type: secretstores.local.file\n  metadata:\n  - name: secretsFile\n    value: {}\n",
            secrets.display()
        ),
    )
    .unwrap();
    let config = dir.path().join("config.conf");
    std::fs::write(
        &config,
        "kind: Configuration\nmetadata:\n  name: c\nspec:\n  secrets:\n    scopes:\n    - storeName: localsecrets\n      defaultAccess: deny\n      allowedSecrets: [\"db:password\"]\n",
    )
    .unwrap();
    let args = daprs_sidecar::config::Args::try_parse_from([
        "daprd",
        "--app-id",
        "rustsdk",
        "--dapr-http-port",
        "0",
        "--dapr-grpc-port",
        "0",
        "--enable-metrics=false",
        "--dapr-listen-addresses",
        "127.0.0.1",
        "--resources-path",
        dir.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ])
    .unwrap();
    let running = daprs_sidecar::start(args).await.unwrap();
    let options = ClientOptions::new().with_address(format!("http://{}", running.grpc[0]));
    let mut client = dapr::Client::from_options(options).await.unwrap();

    client
        .save_state("statestore", "k", b"v1".to_vec(), None, None, None)
        .await
        .unwrap();
    let got = client.get_state("statestore", "k", None).await.unwrap();
    assert_eq!(got.data, b"v1");
    let conflict = client
        .save_state(
            "statestore",
            "k",
            b"v2".to_vec(),
            Some(Etag {
                value: "stale".into(),
            }),
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(format!("{conflict:?}").contains("Aborted"), "{conflict:?}");
    client
        .save_state(
            "statestore",
            "k",
            b"v2".to_vec(),
            Some(Etag { value: got.etag }),
            None,
            None,
        )
        .await
        .unwrap();

    client
        .save_bulk_states(
            "statestore",
            vec![
                StateItem {
                    key: "a".into(),
                    value: b"1".to_vec(),
                    ..Default::default()
                },
                StateItem {
                    key: "ttl".into(),
                    value: b"x".to_vec(),
                    metadata: HashMap::from([("ttlInSeconds".into(), "1".into())]),
                    ..Default::default()
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        client
            .get_state("statestore", "a", None)
            .await
            .unwrap()
            .data,
        b"1"
    );
    client.delete_state("statestore", "a", None).await.unwrap();
    assert!(
        client
            .get_state("statestore", "a", None)
            .await
            .unwrap()
            .data
            .is_empty()
    );
    assert_eq!(
        client
            .get_state("statestore", "ttl", None)
            .await
            .unwrap()
            .data,
        b"x"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        client
            .get_state("statestore", "ttl", None)
            .await
            .unwrap()
            .data
            .is_empty(),
        "the TTL expired"
    );

    let secret = client
        .get_secret("localsecrets", "db:password")
        .await
        .unwrap();
    assert_eq!(secret.data["db:password"], "s3cret");
    let denied = client
        .get_secret("localsecrets", "db:user")
        .await
        .unwrap_err();
    assert!(
        format!("{denied:?}").contains("PermissionDenied"),
        "{denied:?}"
    );
    let bulk = client.get_bulk_secret("localsecrets", None).await.unwrap();
    assert_eq!(bulk.data.len(), 1);

    running.runtime.request_stop();
    running.wait().await.unwrap();
}
