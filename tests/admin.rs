//! The admin listener as an attacker and as each kind of user meets it: every route of the admin API
//! without a token, with a viewer's, an operator's and an admin's; requests a web page could make
//! (a `text/plain` body, a cross-site `Origin`, a rebinding `Host`); the public listener, which
//! serves none of it; a unix socket; `/metrics` made public; the dispatcher's port.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use reqwest::StatusCode;
use serde_json::Value;
use support::{Engine, Kinetic, TestStore, broker_yaml, cli, documents, trigger_yaml, write_yaml};

/// One route of the admin API, the role it needs, and a body when it takes one.
struct Route {
    method: reqwest::Method,
    path: &'static str,
    body: Option<(&'static str, String)>,
    needs: &'static str,
}

fn routes() -> Vec<Route> {
    let get = |path| Route {
        method: reqwest::Method::GET,
        path,
        body: None,
        needs: "viewer",
    };
    vec![
        get("/api/v1/brokers"),
        get("/api/v1/triggers"),
        get("/api/v1/triggers/default/keep"),
        get("/api/v1/services"),
        get("/api/v1/revisions"),
        get("/api/v1/sources"),
        get("/api/v1/deadletters"),
        get("/api/v1/deadletters/no-such-letter"),
        get("/api/v1/services/default/none/logs"),
        get("/metrics"),
        Route {
            method: reqwest::Method::POST,
            path: "/api/v1/deadletters/replay",
            body: Some((
                "application/json",
                r#"{"ids": ["no-such-letter"]}"#.to_owned(),
            )),
            needs: "operator",
        },
        Route {
            method: reqwest::Method::POST,
            path: "/api/v1/apply?file=more.yaml",
            body: Some(("application/yaml", broker_yaml("more"))),
            needs: "admin",
        },
        Route {
            method: reqwest::Method::DELETE,
            path: "/api/v1/triggers/default/gone",
            body: None,
            needs: "admin",
        },
    ]
}

const ROLES: [&str; 3] = ["viewer", "operator", "admin"];

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).expect("role")
}

async fn request(
    client: &reqwest::Client,
    base: &str,
    route: &Route,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client.request(route.method.clone(), format!("{base}{}", route.path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some((content_type, body)) = &route.body {
        request = request
            .header("content-type", *content_type)
            .body(body.clone());
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request")
}

fn resources(dir: &Path) -> std::path::PathBuf {
    write_yaml(
        dir,
        "resources.yaml",
        &documents(&[
            broker_yaml("default"),
            trigger_yaml("keep", "default", "http://127.0.0.1:9/", ""),
            trigger_yaml("gone", "default", "http://127.0.0.1:9/", ""),
        ]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_needs_the_right_token_and_refuses_what_a_web_page_sends() {
    let store = TestStore::new(Engine::Sqlite).await;
    let mut tokens = std::collections::HashMap::new();
    let mut lines = vec!["# role name hash".to_owned()];
    for role in ROLES {
        let (token, line) = support::create_token(role);
        tokens.insert(role, token);
        lines.push(line);
    }
    let token_file = store.dir().join("tokens.txt");
    std::fs::write(&token_file, lines.join("\n") + "\n").unwrap();
    let file = resources(store.dir());
    let kinetic = Kinetic::up_with(
        &store,
        &[&file],
        &["--admin-tokens", token_file.to_str().unwrap()],
    );
    assert!(
        !store.dir().join("admin-token").exists(),
        "with --admin-tokens no local token is made"
    );
    let client = reqwest::Client::new();
    let admin = kinetic.admin_url.clone();
    let public = kinetic.base_url.clone();
    for route in routes() {
        let name = format!("{} {}", route.method, route.path);
        // No token, and a token kinetic does not know: 401 with a challenge and a way out.
        for token in [None, Some("kinetic_not-a-known-token")] {
            let response = request(&client, &admin, &route, token, &[]).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
            let challenge = response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(challenge.starts_with("Bearer"), "{name}: {challenge}");
            assert_eq!(
                challenge.contains("invalid_token"),
                token.is_some(),
                "{name}: {challenge}"
            );
            let body: Value = response.json().await.unwrap();
            assert!(
                body["hint"].as_str().unwrap().contains("--admin-tokens"),
                "{name}: {body}"
            );
        }
        // Each role: allowed when high enough, else 403 naming the role needed.
        for role in ROLES {
            let response = request(&client, &admin, &route, Some(&tokens[role]), &[]).await;
            let status = response.status();
            if rank(role) >= rank(route.needs) {
                assert!(
                    ![401, 403, 415, 421].contains(&status.as_u16()),
                    "{name} as {role}: {status} {}",
                    response.text().await.unwrap_or_default()
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{name} as {role}");
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["required_role"], route.needs, "{name}: {body}");
                let error = body["error"].as_str().unwrap();
                assert!(
                    error.contains(&format!("needs the {} role", route.needs))
                        && error.contains(&format!("has the {role} role")),
                    "{name}: {error}"
                );
            }
        }
        let admin_token = Some(tokens["admin"].as_str());
        // A body a form or a `no-cors` fetch can send: 415, nothing done.
        if route.body.is_some() {
            let plain = Route {
                method: route.method.clone(),
                path: route.path,
                body: Some(("text/plain", route.body.clone().unwrap().1)),
                needs: route.needs,
            };
            let response = request(&client, &admin, &plain, admin_token, &[]).await;
            assert_eq!(
                response.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{name}"
            );
            let body: Value = response.json().await.unwrap();
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("application/yaml or application/json"),
                "{name}: {body}"
            );
        }
        // A page of another origin, even with a token: 403.
        for header in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
        ] {
            let response = request(&client, &admin, &route, admin_token, &[header]).await;
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{name} {header:?}"
            );
        }
        // DNS rebinding: the page's own name in Host.
        let port = kinetic.admin_url.rsplit(':').next().unwrap().to_owned();
        let rebound = format!("rebind.evil.example:{port}");
        let response = request(&client, &admin, &route, admin_token, &[("host", &rebound)]).await;
        assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST, "{name}");
        // The public listener serves none of it.
        let response = request(&client, &public, &route, admin_token, &[]).await;
        assert_eq!(
            response.status(),
            StatusCode::NOT_FOUND,
            "{name} on the public listener"
        );
    }
    // Only the admin's apply went through (once: the 415 and cross-origin ones did nothing).
    let listed: Value = kinetic
        .api_with(&tokens["viewer"])
        .get(kinetic.admin("/api/v1/brokers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "more"], "{listed}");
    // The public listener still serves what it is for.
    let health = client.get(kinetic.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = client.get(kinetic.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_admin_listener_and_public_metrics() {
    let store = TestStore::new(Engine::Sqlite).await;
    let socket = store.dir().join("run/admin.sock");
    let socket_arg = format!("unix:{}", socket.display());
    let kinetic = Kinetic::up_with(
        &store,
        &[],
        &["--admin-listen", &socket_arg, "--metrics-public"],
    );
    assert_eq!(kinetic.admin_url, socket_arg);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only kinetic's user may connect");
    // The local token: made on first start, readable by its owner only; the CLI finds it.
    let token_file = store.dir().join("admin-token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let file = write_yaml(store.dir(), "b.yaml", &broker_yaml("sock"));
    let state = store.dir().display().to_string();
    let output = cli(&[
        "apply",
        "-f",
        file.to_str().unwrap(),
        "--server",
        &socket_arg,
        "--state-dir",
        &state,
    ]);
    assert!(output.status.success(), "{output:?}");
    let output = cli(&[
        "get",
        "brokers",
        "--server",
        &socket_arg,
        "--state-dir",
        &state,
    ]);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("sock"),
        "{output:?}"
    );
    // Without the token (a state directory that has none), even the socket says 401.
    let empty = tempfile::tempdir().unwrap();
    let output = cli(&[
        "get",
        "brokers",
        "--server",
        &socket_arg,
        "--state-dir",
        empty.path().to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("needs a token") && error.contains("admin-token"),
        "{error}"
    );
    // --metrics-public: metrics without a token, on the socket; the API still needs one.
    let metrics = reqwest::Client::builder()
        .unix_socket(socket.as_path())
        .build()
        .unwrap();
    let response = metrics
        .get("http://localhost/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = metrics
        .get("http://localhost/api/v1/brokers")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    drop(kinetic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatchers_port_serves_health_and_guarded_metrics_only() {
    let store = TestStore::new(Engine::Sqlite).await;
    let output = cli(&["migrate", "--store", &store.url]);
    assert!(output.status.success(), "{output:?}");
    let dispatcher = Kinetic::spawn(
        &[
            "dispatcher".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--store".into(),
            store.url.clone(),
        ],
        &[],
    );
    let client = reqwest::Client::new();
    let status = |path: &str, token: Option<&str>| {
        let mut request = client.get(dispatcher.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/healthz", None).await, 200);
    assert_eq!(status("/readyz", None).await, 200);
    assert_eq!(status("/metrics", None).await, 401);
    assert_eq!(status("/metrics", Some(&dispatcher.token)).await, 200);
    for path in ["/api/v1/triggers", "/api/v1/brokers"] {
        assert_eq!(status(path, Some(&dispatcher.token)).await, 404, "{path}");
    }
    let apply = client
        .post(dispatcher.url("/api/v1/apply"))
        .bearer_auth(&dispatcher.token)
        .header("content-type", "application/yaml")
        .body(broker_yaml("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(apply.status().as_u16(), 404);
}

/// A port of a free loopback address, for flags that take no `:0` back in a log line.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brokers_metrics_listener_serves_metrics_alone() {
    let store = TestStore::new(Engine::Sqlite).await;
    let client = reqwest::Client::new();
    for public in [false, true] {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "broker".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--store".into(),
            store.url.clone(),
            "--metrics-listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        if public {
            args.push("--metrics-public".into());
        }
        let broker = Kinetic::spawn(&args, &[]);
        let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
        let metrics = client.get(url("/metrics")).send().await.unwrap();
        if public {
            assert_eq!(metrics.status(), StatusCode::OK);
            let text = metrics.text().await.unwrap();
            assert!(text.contains("kinetic_"), "{text}");
        } else {
            assert_eq!(metrics.status(), StatusCode::UNAUTHORIZED);
            let metrics = client
                .get(url("/metrics"))
                .bearer_auth(&broker.token)
                .send()
                .await
                .unwrap();
            assert_eq!(metrics.status(), StatusCode::OK);
        }
        // Nothing but metrics there, token or not.
        for path in ["/api/v1/brokers", "/healthz"] {
            let response = client
                .get(url(path))
                .bearer_auth(&broker.token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }
}
