//! Unit tests that need the store's insides (raw columns). The behaviour
//! contract, on both backends, is `tests/store.rs`.

use super::*;

fn tenant(id: &str) -> Tenant {
    Tenant {
        id: TenantId::parse(id).unwrap(),
        name: "Acme".into(),
        enabled: true,
        graph: GraphCredentials {
            entra_tenant_id: "entra".into(),
            client_id: "client".into(),
            client_secret: SecretString::from("graph-secret-plain"),
            graph_base: "https://graph.example".into(),
            login_base: "https://login.example".into(),
        },
        hellohq: HellohqCredentials {
            base_url: "https://hq.example".into(),
            token: SecretString::from("hq-token-plain"),
            webhook_secrets: vec![SecretString::from("whsec_plain_one"), SecretString::from("whsec_plain_two")],
        },
        settings: serde_json::json!({}),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

async fn memory_store() -> Store {
    let cipher = Cipher::from_base64(&Cipher::generate_key_base64()).unwrap();
    Store::open("sqlite::memory:", 1, cipher).await.unwrap()
}

#[tokio::test]
async fn secrets_never_appear_in_the_stored_row() {
    let store = memory_store().await;
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    let row = store.pool.fetch_optional("SELECT * FROM tenants WHERE id = 'acme'", args![]).await.unwrap().unwrap();
    let Row::Sqlite(row) = row else { unreachable!("memory store is SQLite") };
    let mut raw = String::new();
    for i in 0..sqlx::Row::len(&row) {
        if let Ok(Some(text)) = sqlx::Row::try_get::<Option<String>, _>(&row, i) {
            raw.push_str(&text);
            raw.push('\n');
        }
    }
    assert!(raw.contains("https://hq.example"), "the raw row was read: {raw}");
    for secret in ["graph-secret-plain", "hq-token-plain", "whsec_plain_one", "whsec_plain_two"] {
        assert!(!raw.contains(secret), "{secret} is stored in plaintext");
    }
    let back = store.get_tenant(&TenantId::parse("acme").unwrap()).await.unwrap().unwrap();
    assert_eq!(back.graph.client_secret.expose_secret(), "graph-secret-plain");
}

#[tokio::test]
async fn ciphertext_copied_to_another_tenant_does_not_decrypt() {
    let store = memory_store().await;
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    store.upsert_tenant(&tenant("evil")).await.unwrap();
    store
        .pool
        .execute(
            "UPDATE tenants SET client_secret_enc = (SELECT client_secret_enc FROM tenants WHERE id = 'acme') \
             WHERE id = 'evil'",
            args![],
        )
        .await
        .unwrap();
    let err = store.get_tenant(&TenantId::parse("evil").unwrap()).await.unwrap_err();
    assert!(matches!(err, StoreError::Crypto(CryptoError::Decrypt)), "{err}");
    assert!(store.get_tenant(&TenantId::parse("acme").unwrap()).await.unwrap().is_some());
}

#[test]
fn store_urls_other_than_sqlite_and_postgres_are_refused() {
    let cipher = Cipher::from_base64(&Cipher::generate_key_base64()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let err = rt.block_on(Store::open("mysql://u:pw@host/db", 1, cipher)).unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl));
}

#[tokio::test]
async fn postgres_errors_do_not_echo_the_password() {
    // Port 1 on loopback refuses at once: a connection error, not a hang.
    let err = open_postgres("postgres://user:hunter2@127.0.0.1:1/db", 1, Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}
