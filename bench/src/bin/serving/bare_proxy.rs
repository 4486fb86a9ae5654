//! The bare reverse proxy: a hyper HTTP/1.1 server whose every request goes to one upstream over a
//! hyper-util pooled client, with no logic at all. What it costs is the floor of any extra hop.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Answer = Response<Either<Incoming, Full<Bytes>>>;

pub fn run(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut request: hyper::Request<Incoming>| {
                let client = client.clone();
                async move {
                    let path = request
                        .uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_owned();
                    let answer: Answer = match format!("http://{upstream}{path}").parse::<Uri>() {
                        Ok(uri) => {
                            *request.uri_mut() = uri;
                            match client.request(request).await {
                                Ok(response) => response.map(Either::Left),
                                Err(_) => bad_gateway(),
                            }
                        }
                        Err(_) => bad_gateway(),
                    };
                    Ok::<_, std::convert::Infallible>(answer)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn bad_gateway() -> Answer {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(b"upstream\n"))));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
