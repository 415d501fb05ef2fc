use serde_json::{Value, json};
use wharf_tests::db::TestDb;
use wharf_tests::{assert_envelope, spawn_app};

#[tokio::test]
async fn a_workflow_round_trips_with_its_schema() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let p = app.create_project("acme").await;
    let schema = json!([
        {"name": "title", "type": "string"},
        {"name": "price", "type": "number", "nullable": true},
        {"name": "qty", "type": "integer"},
        {"name": "ok", "type": "boolean"},
        {"name": "at", "type": "timestamp"},
        {"name": "meta", "type": "json", "nullable": true}
    ]);
    let name = "Ñandú 价格 \"quoted\"\r\nnext";
    let res = app
        .post_json(
            "/v1/workflows",
            &p.key,
            &json!({"name": name, "schema": schema}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(
        uuid::Uuid::parse_str(&id).expect("uuid").get_version_num(),
        7
    );
    let mut expected_schema = schema.clone();
    for f in expected_schema.as_array_mut().expect("array") {
        f.as_object_mut()
            .expect("obj")
            .entry("nullable")
            .or_insert(json!(false));
    }
    assert_eq!(created["schema"], expected_schema);
    assert_eq!(created["name"], name);
    assert!(
        created["createdAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let fetched: Value = app
        .get(&format!("/v1/workflows/{id}"), &p.key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(fetched, created);
}

#[tokio::test]
async fn schema_errors_name_the_bad_part() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let p = app.create_project("acme").await;
    let f = |name: &str, ty: &str| json!({"name": name, "type": ty});
    let too_many: Vec<Value> = (0..501).map(|i| f(&format!("f{i}"), "string")).collect();
    let cases = [
        (json!({"name": "w", "schema": []}), "between 1 and 500"),
        (json!({"name": "w", "schema": too_many}), "got 501"),
        (
            json!({"name": "w", "schema": [f("a", "string"), f("a", "integer")]}),
            "schema[1].name: duplicate",
        ),
        (
            json!({"name": "w", "schema": [f("_id", "string")]}),
            "schema[0].name",
        ),
        (
            json!({"name": "w", "schema": [f("has space", "string")]}),
            "schema[0].name",
        ),
        (
            json!({"name": "w", "schema": [f("x' or '1'='1", "string")]}),
            "schema[0].name",
        ),
        (
            json!({"name": "w", "schema": [f(&"a".repeat(65), "string")]}),
            "schema[0].name",
        ),
        (
            json!({"name": "w", "schema": [f("a", "decimal")]}),
            "schema[0].type",
        ),
        (
            json!({"name": "w", "schema": [{"name": "a", "type": "string", "nullable": "yes"}]}),
            "schema[0].nullable",
        ),
        (
            json!({"name": "w", "schema": [{"name": "a"}]}),
            "schema[0].type",
        ),
        (json!({"name": "w", "schema": {"a": "string"}}), "schema"),
        (json!({"name": "", "schema": [f("a", "string")]}), "name"),
        (
            json!({"name": "x".repeat(201), "schema": [f("a", "string")]}),
            "name",
        ),
        (json!({"schema": [f("a", "string")]}), "name"),
        (
            json!({"name": "w", "schema": [f("a", "string")], "color": "red"}),
            "color",
        ),
    ];
    for (body, needle) in cases {
        let (code, msg) =
            assert_envelope(app.post_json("/v1/workflows", &p.key, &body).await, 400).await;
        assert_eq!(code, "INVALID_REQUEST");
        assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
    }
    // Nothing was stored by the rejected requests.
    let list: Value = app
        .get("/v1/workflows", &p.key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(list, json!({"data": [], "nextCursor": null}));
    // 500 fields and a 200-character name are fine.
    let max: Vec<Value> = (0..500).map(|i| f(&format!("f{i}"), "integer")).collect();
    app.create_workflow(&p.key, &"é".repeat(200), json!(max))
        .await;
}

#[tokio::test]
async fn workflows_list_newest_first_with_cursors() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let p = app.create_project("acme").await;
    let other = app.create_project("other").await;
    app.create_workflow(
        &other.key,
        "not mine",
        json!([{"name": "a", "type": "string"}]),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            app.create_workflow(
                &p.key,
                &format!("w{i}"),
                json!([{"name": "a", "type": "string"}]),
            )
            .await,
        );
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/workflows?limit=2&cursor={c}"),
            None => "/v1/workflows?limit=2".to_string(),
        };
        let page: Value = app.get(&path, &p.key).await.json().await.expect("json");
        let data = page["data"].as_array().expect("data");
        assert!(data.len() <= 2);
        seen.extend(
            data.iter()
                .map(|w| w["id"].as_str().expect("id").to_string()),
        );
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    for bad in [
        "/v1/workflows?limit=0",
        "/v1/workflows?limit=201",
        "/v1/workflows?cursor=nope",
        "/v1/workflows?limit=x",
    ] {
        let (code, msg) = assert_envelope(app.get(bad, &p.key).await, 400).await;
        assert_eq!(code, "INVALID_REQUEST", "{bad}: {msg}");
    }
}

#[tokio::test]
async fn ids_in_paths_are_checked() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = spawn_app(pool).await;
    let p = app.create_project("acme").await;
    let (code, msg) = assert_envelope(app.get("/v1/workflows/not-a-uuid", &p.key).await, 400).await;
    assert_eq!(code, "INVALID_REQUEST");
    assert!(msg.contains("workflowId"), "{msg}");
    let unknown = uuid::Uuid::new_v4();
    let (code, _) = assert_envelope(
        app.get(&format!("/v1/workflows/{unknown}"), &p.key).await,
        404,
    )
    .await;
    assert_eq!(code, "NOT_FOUND");
    let (code, _) = assert_envelope(
        app.get(&format!("/v1/workflows/{unknown}/runs"), &p.key)
            .await,
        404,
    )
    .await;
    assert_eq!(code, "NOT_FOUND");
}
