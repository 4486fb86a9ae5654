//! A subscriber for trying kinetic: prints each CloudEvent it receives on one line, with the path it
//! arrived on. Requests to paths under `/fail/` are answered 500 so retries and dead letters can be
//! seen. Listens on the address given as the first argument; without one, on `127.0.0.1:$PORT` when
//! `PORT` is set (as kinetic sets it when event-display runs as a Service), else `127.0.0.1:9090`.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};

async fn receive(uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let failing = uri.path().starts_with("/fail/");
    println!(
        "{} {} type={} source={} id={} data={}{}",
        if failing { "FAIL" } else { "GOT " },
        uri.path(),
        header("ce-type"),
        header("ce-source"),
        header("ce-id"),
        String::from_utf8_lossy(&body),
        match headers.get("ce-knativeerrorcode") {
            Some(code) => format!(" knativeerrorcode={}", code.to_str().unwrap_or("?")),
            None => String::new(),
        }
    );
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

#[tokio::main]
async fn main() {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| match std::env::var("PORT") {
            Ok(port) => format!("127.0.0.1:{port}"),
            Err(_) => "127.0.0.1:9090".to_owned(),
        });
    let listener = match tokio::net::TcpListener::bind(&address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "event-display: cannot listen on {address}: {error}; give a free address as the \
                 first argument, e.g. event-display 127.0.0.1:9091"
            );
            std::process::exit(2);
        }
    };
    match listener.local_addr() {
        Ok(local) => eprintln!("event-display listening on http://{local}"),
        Err(_) => eprintln!("event-display listening on http://{address}"),
    }
    let app = axum::Router::new().fallback(receive);
    if let Err(error) = axum::serve(listener, app).await {
        eprintln!("event-display: {error}");
        std::process::exit(1);
    }
}
