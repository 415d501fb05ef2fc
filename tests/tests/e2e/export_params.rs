//! Filters, sorting, row ids, projection and validation of export requests.

use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::{TestApp, TestProject, assert_envelope, spawn_app};

async fn setup(app: &TestApp) -> (TestProject, String) {
    let p = app.create_project("acme").await;
    let wf = app
        .create_workflow(
            &p.key,
            "Items",
            json!([
                {"name": "name", "type": "string", "nullable": true},
                {"name": "price", "type": "number", "nullable": true},
                {"name": "qty", "type": "integer", "nullable": true},
                {"name": "ok", "type": "boolean", "nullable": true},
                {"name": "at", "type": "timestamp", "nullable": true},
                {"name": "meta", "type": "json", "nullable": true}
            ]),
        )
        .await;
    let rows = [
        json!({"name": "apple", "price": 1.5, "qty": 10, "ok": true, "at": "2024-01-01T00:00:00Z", "meta": {"c": "red"}}),
        json!({"name": "banana", "price": 0.25, "qty": 5, "ok": false, "at": "2024-02-01T00:00:00Z"}),
        json!({"name": "cherry", "price": null, "qty": 200, "ok": null, "at": null, "meta": {"c": "red"}}),
        json!({"name": null, "price": 10, "qty": null, "ok": true, "at": "2024-03-01T00:00:00Z"}),
        json!({"name": "it's \"quoted\"", "price": 3, "qty": 1, "ok": false, "at": "2023-12-31T23:59:59Z"}),
    ];
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    assert_eq!(
        app.post_run(&p.key, &wf, "application/x-ndjson", body)
            .await
            .status(),
        201
    );
    (p, wf)
}

/// `_id`s of the exported rows, in file order.
async fn ids(app: &TestApp, p: &TestProject, wf: &str, mut req: Value) -> Vec<i64> {
    req["format"] = json!("ndjson");
    let cols = req.get("columns").cloned();
    if cols.is_none() {
        req["columns"] = json!(["_id"]);
    }
    let status = app.export_and_wait(&p.key, wf, &req).await;
    let bytes = app.export_file(&status).await;
    let text = String::from_utf8(bytes).expect("utf8");
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["_id"]
                .as_i64()
                .expect("_id")
        })
        .collect()
}

#[tokio::test]
async fn every_filter_op_sort_and_selection() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let _worker = app.start_worker().await;
    let (p, wf) = setup(&app).await;
    let f = |field: &str, op: &str, value: Value| json!({"filters": [{"field": field, "op": op, "value": value}]});
    let cases: Vec<(Value, Vec<i64>)> = vec![
        (json!({}), vec![1, 2, 3, 4, 5]),
        (f("name", "eq", json!("banana")), vec![2]),
        (f("name", "ne", json!("banana")), vec![1, 3, 5]),
        (f("price", "gt", json!(1.5)), vec![4, 5]),
        (f("price", "gte", json!(1.5)), vec![1, 4, 5]),
        (f("qty", "lt", json!(5)), vec![5]),
        (f("qty", "lte", json!(5)), vec![2, 5]),
        (
            f("at", "gte", json!("2024-01-15T00:00:00+00:00")),
            vec![2, 4],
        ),
        (f("ok", "eq", json!(true)), vec![1, 4]),
        (f("meta", "eq", json!({"c": "red"})), vec![1, 3]),
        (f("name", "contains", json!("an")), vec![2]),
        (f("name", "contains", json!("AN")), vec![]),
        (f("name", "contains", json!("'s \"q")), vec![5]),
        (
            f("name", "in", json!(["apple", "cherry", "zzz"])),
            vec![1, 3],
        ),
        (f("qty", "in", json!([1, 200])), vec![3, 5]),
        (
            json!({"filters": [{"field": "price", "op": "is_null"}]}),
            vec![3],
        ),
        (
            json!({"filters": [{"field": "name", "op": "not_null"}]}),
            vec![1, 2, 3, 5],
        ),
        (
            json!({"filters": [{"field": "ok", "op": "eq", "value": false}, {"field": "qty", "op": "gt", "value": 1}]}),
            vec![2],
        ),
        (f("name", "eq", json!("x' or '1'='1")), vec![]),
        (
            json!({"sortBy": "price", "order": "desc"}),
            vec![3, 4, 5, 1, 2],
        ),
        (json!({"sortBy": "price"}), vec![2, 1, 5, 4, 3]),
        (
            json!({"sortBy": "_id", "order": "desc"}),
            vec![5, 4, 3, 2, 1],
        ),
        (
            json!({"sortBy": "name", "order": "asc"}),
            vec![1, 2, 3, 5, 4],
        ),
        (json!({"rowIds": [4, 2, 99]}), vec![2, 4]),
        (
            json!({"rowIds": [1, 2, 3], "order": "desc", "filters": [{"field": "qty", "op": "gte", "value": 10}]}),
            vec![3, 1],
        ),
    ];
    for (req, want) in cases {
        assert_eq!(ids(&app, &p, &wf, req.clone()).await, want, "{req}");
    }
}

#[tokio::test]
async fn columns_choose_and_order_the_fields() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let _worker = app.start_worker().await;
    let (p, wf) = setup(&app).await;
    let status = app
        .export_and_wait(
            &p.key,
            &wf,
            &json!({"format": "csv", "columns": ["qty", "_id", "name"], "rowIds": [1, 5]}),
        )
        .await;
    let text = String::from_utf8(app.export_file(&status).await).expect("utf8");
    assert_eq!(
        text,
        "qty,_id,name\n10,1,apple\n1,5,\"it's \"\"quoted\"\"\"\n"
    );
    let status = app
        .export_and_wait(
            &p.key,
            &wf,
            &json!({"format": "json", "columns": ["price"], "rowIds": [3]}),
        )
        .await;
    let v: Value = serde_json::from_slice(&app.export_file(&status).await).expect("json");
    assert_eq!(v, json!([{"price": null}]));
}

#[tokio::test]
async fn no_match_and_empty_runs_give_well_formed_empty_files() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let _worker = app.start_worker().await;
    let (p, wf) = setup(&app).await;
    let none = json!([{"field": "qty", "op": "gt", "value": 1000000}]);
    let csv = app
        .export_and_wait(&p.key, &wf, &json!({"format": "csv", "filters": none}))
        .await;
    assert_eq!(csv["rowCount"], 0);
    assert_eq!(app.export_file(&csv).await, b"name,price,qty,ok,at,meta\n");
    let js = app
        .export_and_wait(&p.key, &wf, &json!({"format": "json", "filters": none}))
        .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&app.export_file(&js).await).expect("json"),
        json!([])
    );
    let nd = app
        .export_and_wait(&p.key, &wf, &json!({"format": "ndjson", "filters": none}))
        .await;
    assert!(app.export_file(&nd).await.is_empty());
    let pq = app
        .export_and_wait(&p.key, &wf, &json!({"format": "parquet", "filters": none}))
        .await;
    let bytes = bytes::Bytes::from(app.export_file(&pq).await);
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet");
    assert_eq!(reader.schema().fields().len(), 6);
    assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
    // An empty run (the latest) exports as an empty file too.
    assert_eq!(
        app.post_run(&p.key, &wf, "application/x-ndjson", "")
            .await
            .status(),
        201
    );
    let empty = app
        .export_and_wait(&p.key, &wf, &json!({"format": "csv"}))
        .await;
    assert_eq!(empty["rowCount"], 0);
    assert_eq!(
        app.export_file(&empty).await,
        b"name,price,qty,ok,at,meta\n"
    );
}

#[tokio::test]
async fn bad_parameters_are_named_and_store_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool.clone()).await;
    let (p, wf) = setup(&app).await;
    let many: Vec<i64> = (0..1001).collect();
    let cases = [
        (json!({"format": "xml"}), "format"),
        (
            json!({"filters": [{"field": "nope", "op": "eq", "value": 1}]}),
            "filters[0]: field",
        ),
        (
            json!({"filters": [{"field": "price", "op": "like", "value": 1}]}),
            "filters[0].op",
        ),
        (
            json!({"filters": [{"field": "price", "op": "eq", "value": "cheap"}]}),
            "filters[0]: value",
        ),
        (
            json!({"filters": [{"field": "qty", "op": "eq", "value": 1.5}]}),
            "filters[0]: value",
        ),
        (
            json!({"filters": [{"field": "qty", "op": "in", "value": many}]}),
            "1 to 1000",
        ),
        (
            json!({"filters": [{"field": "x' or '1'='1", "op": "eq", "value": 1}]}),
            "filters[0]: field",
        ),
        (
            json!({"filters": [{"field": "name", "op": "eq", "value": "a", "extra": 1}]}),
            "extra",
        ),
        (json!({"sortBy": "price;drop table workflows"}), "sortBy"),
        (json!({"order": "sideways"}), "order"),
        (json!({"columns": ["name", "nope"]}), "columns[1]"),
        (json!({"columns": ["name", "x' or '1'='1"]}), "columns[1]"),
        (json!({"sortBy": "\"; DROP TABLE exports; --"}), "sortBy"),
        (json!({"runId": "not-a-uuid"}), "runId"),
        (json!({"compression": "zstd"}), "compression"),
        (json!({"rowIds": ["1"]}), "rowIds"),
        (json!({"colour": "red"}), "colour"),
    ];
    for (body, needle) in cases {
        let (code, msg) = assert_envelope(app.post_export(&p.key, &wf, &body).await, 400).await;
        assert_eq!(code, "INVALID_REQUEST");
        assert!(
            msg.contains(needle),
            "{body}: expected {needle:?} in {msg:?}"
        );
    }
    let unknown_run = uuid::Uuid::now_v7();
    assert_envelope(
        app.post_export(&p.key, &wf, &json!({"runId": unknown_run}))
            .await,
        404,
    )
    .await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM exports")
        .fetch_one(&pool)
        .await
        .expect("q");
    assert_eq!(count, 0, "nothing stored by rejected requests");
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'workflows'")
            .fetch_one(&pool)
            .await
            .expect("q");
    assert_eq!(tables, 1);
}

#[tokio::test]
async fn idempotency_keys_replay_or_conflict() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let (p, wf) = setup(&app).await;
    let send = |key: &'static str, body: Value| {
        let rb = app
            .client
            .post(app.url(&format!("/v1/workflows/{wf}/exports")))
            .header("x-api-key", &p.key)
            .header("Idempotency-Key", key)
            .json(&body);
        async move { rb.send().await.expect("sent") }
    };
    let first = send("k-1", json!({"format": "csv"})).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("json");
    let again = send("k-1", json!({"format": "csv"})).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["exportId"], first["exportId"]);
    let (code, _) = assert_envelope(send("k-1", json!({"format": "json"})).await, 409).await;
    assert_eq!(code, "CONFLICT");
    let other = send("k-2", json!({"format": "csv"})).await;
    assert_eq!(other.status(), 202);
}
