//! Reads pipelined on one shared connection return their own rows. With
//! PEREGRINE_TEST_PGBOUNCER=1 the pipeline goes through PgBouncer in transaction pooling
//! mode, which may hand each of its transactions to a different server connection.

use futures_util::future::join_all;

use crate::harness::{Backend, Options, TestApp};

/// Concurrent reads, all on the one shared read client.
const READS: usize = 400;
/// Users the reads pick from.
const USERS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_reads_return_own_rows() {
    let options = Options {
        args: ["--db-read-clients", "1"].map(String::from).to_vec(),
        ..Options::default()
    };
    let Some(app) = TestApp::spawn_with(Backend::Postgres, options).await else {
        return;
    };
    let mut users = Vec::new();
    for i in 0..USERS {
        let user = app
            .create_user(&format!("Reader {i}"), &format!("reader{i}@example.com"))
            .await;
        users.push((user["id"].as_i64().unwrap(), user["email"].clone()));
    }

    // Writes on the pool run at the same time, so PgBouncer's server connections are busy
    // and change hands between the read transactions.
    let reads = join_all((0..READS).map(|i| {
        let (id, email) = users[(i * 7) % USERS].clone();
        let app = &app;
        async move {
            let response = app.get(&format!("/api/v1/users/{id}")).await;
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (id, email, status, body)
        }
    }));
    let writes = join_all(users.iter().map(|(id, _)| {
        let app = &app;
        async move {
            let body = serde_json::json!({ "name": format!("Renamed {id}") }).to_string();
            app.client
                .patch(app.url(&format!("/api/v1/users/{id}")))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("send the request")
                .status()
                .as_u16()
        }
    }));
    let (reads, writes) = tokio::join!(reads, writes);

    let mut wrong = Vec::new();
    for (id, email, status, body) in &reads {
        if *status != 200 || body["id"] != *id || body["email"] != *email {
            wrong.push(format!("GET {id}: {status} {body}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {READS} reads went wrong; the first ones:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(writes.iter().all(|&status| status == 200), "{writes:?}");
    app.stop().await;
}
