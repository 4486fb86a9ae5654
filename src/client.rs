//! CLI commands that talk to a running kinetic over its HTTP API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use cloudevents::{EventBuilder, EventBuilderV10};
use serde_json::Value;

use crate::apply;

/// Which kinetic admin listener to talk to, and with which token.
#[derive(Debug, Clone, Args)]
pub struct ServerArg {
    /// A running kinetic's admin listener: `http://HOST:PORT` or `unix:PATH`.
    #[arg(long, env = "KINETIC_SERVER", default_value = "http://127.0.0.1:8070")]
    pub server: String,
    /// File whose first line is the admin token. Default: `$KINETIC_TOKEN`, else, for a kinetic
    /// on this machine, the state directory's `admin-token`.
    #[arg(long, env = "KINETIC_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// State directory of a kinetic on this machine, whose `admin-token` is used when no token is
    /// given.
    #[arg(long, env = "KINETIC_STATE_DIR", default_value = ".kinetic")]
    pub state_dir: PathBuf,
    /// PEM CA certificates to trust for an `https://` server (besides the system's).
    #[arg(long, env = "KINETIC_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// A client builder that also trusts the CA certificates of `ca_file`.
fn trusting(
    mut builder: reqwest::ClientBuilder,
    ca_file: Option<&Path>,
) -> anyhow::Result<reqwest::ClientBuilder> {
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca-file {}: not PEM certificates", path.display()))?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(builder)
}

impl ServerArg {
    fn unix_socket(&self) -> Option<&Path> {
        self.server.strip_prefix("unix:").map(Path::new)
    }

    fn url(&self, path: &str) -> String {
        match self.unix_socket() {
            // The socket decides where the request goes; the URL names the path only.
            Some(_) => format!("http://localhost{path}"),
            None => format!("{}{path}", self.server.trim_end_matches('/')),
        }
    }

    /// Whether the server is on this machine (loopback or a unix socket), so the state
    /// directory's token may be sent to it.
    fn is_local(&self) -> bool {
        if self.unix_socket().is_some() {
            return true;
        }
        let Ok(url) = reqwest::Url::parse(&self.server) else {
            return false;
        };
        let host = url.host_str().unwrap_or("");
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The token to send: `--token-file`, `$KINETIC_TOKEN`, or the local state directory's.
    fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(file) = &self.token_file {
            return crate::admin::read_token(file)?
                .map(Some)
                .ok_or_else(|| anyhow::anyhow!("--token-file {}: no such file", file.display()));
        }
        if let Ok(token) = std::env::var("KINETIC_TOKEN")
            && !token.trim().is_empty()
        {
            return Ok(Some(token.trim().to_owned()));
        }
        if self.is_local() {
            return crate::admin::read_token(&self.state_dir.join(crate::admin::TOKEN_FILE));
        }
        Ok(None)
    }

    /// A client for the admin API: the token on every request, the unix socket if any.
    fn client(&self) -> anyhow::Result<reqwest::Client> {
        let mut builder = trusting(
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .no_proxy(),
            self.ca_file.as_deref(),
        )?;
        if let Some(token) = self.token()? {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| anyhow::anyhow!("the admin token holds characters a header cannot carry; check the token file"))?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        if let Some(path) = self.unix_socket() {
            builder = builder.unix_socket(path);
        }
        builder.build().context("building the HTTP client")
    }
}

/// Where `kinetic send` posts: the broker ingress on the public listener.
#[derive(Debug, Clone, Args)]
pub struct IngressArg {
    /// Base URL of kinetic's public listener (the broker ingress).
    #[arg(
        long = "ingress",
        env = "KINETIC_INGRESS",
        default_value = "http://127.0.0.1:8080"
    )]
    pub ingress: String,
    /// File whose first line is a JWT for the broker (`kinetic token create`), for brokers an
    /// EventPolicy or the default authorization mode closes. Default: `$KINETIC_BROKER_TOKEN`.
    #[arg(long = "token-file", env = "KINETIC_BROKER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificates to trust for an `https://` ingress (besides the system's).
    #[arg(long, env = "KINETIC_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl IngressArg {
    fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(file) = &self.token_file {
            return crate::admin::read_token(file)?
                .map(Some)
                .ok_or_else(|| anyhow::anyhow!("--token-file {}: no such file", file.display()));
        }
        Ok(std::env::var("KINETIC_BROKER_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    /// The table with more columns (triggers: the subscriber's concurrency limit and deliveries
    /// in flight).
    Wide,
    Json,
    Yaml,
}

/// Sends a request and returns the JSON answer, turning error answers into readable errors.
async fn call(server: &str, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.send().await.with_context(|| {
        format!("cannot reach kinetic at {server} (is `kinetic up` running? set --server)")
    })?;
    let status = response.status();
    let body = response.bytes().await.context("reading the answer")?;
    let value: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    if status.is_success() {
        Ok(value)
    } else {
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        match value.get("hint").and_then(Value::as_str) {
            Some(hint) => bail!("{message} (HTTP {}); {hint}", status.as_u16()),
            None => bail!("{message} (HTTP {})", status.as_u16()),
        }
    }
}

pub async fn apply(server: &ServerArg, files: &[PathBuf]) -> anyhow::Result<()> {
    let client = server.client()?;
    for file in apply::expand_paths(files)? {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {name}"))?;
        // Validate locally first: the same checks, without a round trip.
        kinetic_control::validate::parse_and_validate(&name, &text, None)
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let answer = call(
            &server.server,
            client
                .post(server.url("/api/v1/apply"))
                .query(&[("file", &name)])
                .header(reqwest::header::CONTENT_TYPE, "application/yaml")
                .body(text),
        )
        .await?;
        for applied in answer["applied"].as_array().into_iter().flatten() {
            println!(
                "{} {}/{} {}",
                applied["kind"].as_str().unwrap_or("?").to_lowercase(),
                applied["namespace"].as_str().unwrap_or("?"),
                applied["name"].as_str().unwrap_or("?"),
                applied["outcome"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

pub async fn get(
    server: &ServerArg,
    kind: &str,
    name: Option<&str>,
    namespace: Option<&str>,
    output: Output,
) -> anyhow::Result<()> {
    if matches!(kind, "sources" | "source") {
        return sources(server, namespace, output).await;
    }
    let Some(kind_name) = kinetic_api::Kind::named(kind) else {
        bail!(
            "unknown resource type `{kind}`; use {}",
            crate::api::resource_types()
        );
    };
    let client = server.client()?;
    let items: Vec<Value> = match name {
        Some(name) => {
            let namespace = namespace.unwrap_or("default");
            vec![
                call(
                    &server.server,
                    client.get(server.url(&format!("/api/v1/{kind}/{namespace}/{name}"))),
                )
                .await?,
            ]
        }
        None => {
            let mut request = client.get(server.url(&format!("/api/v1/{kind}")));
            if let Some(namespace) = namespace {
                request = request.query(&[("namespace", namespace)]);
            }
            call(&server.server, request).await?["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        }
    };
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&if name.is_some() {
                items[0].clone()
            } else {
                Value::Array(items)
            })?
        ),
        Output::Yaml => {
            let documents: Vec<String> = items
                .iter()
                .map(serde_saphyr::to_string)
                .collect::<Result<_, _>>()?;
            print!("{}", documents.join("---\n"));
        }
        Output::Table | Output::Wide => {
            let wide = output == Output::Wide;
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|item| {
                    let namespace = item
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    let name = item
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    let text = |pointer: &str| {
                        item.pointer(pointer)
                            .map(|v| match v {
                                Value::String(s) => s.clone(),
                                Value::Null => String::new(),
                                other => other.to_string(),
                            })
                            .unwrap_or_default()
                    };
                    match kind_name {
                        kinetic_api::Kind::Service => vec![
                            namespace.clone(),
                            name.clone(),
                            text("/status/url"),
                            text("/status/latestRevision"),
                            item.pointer("/status/traffic")
                                .and_then(Value::as_array)
                                .map(|t| {
                                    t.iter()
                                        .filter_map(Value::as_str)
                                        .collect::<Vec<_>>()
                                        .join(",")
                                })
                                .unwrap_or_default(),
                            match (text("/status/ready").as_str(), text("/status/problem")) {
                                ("true", _) => "True".to_owned(),
                                (_, problem) if !problem.is_empty() => format!("False: {problem}"),
                                _ => "Unknown".to_owned(),
                            },
                        ],
                        kinetic_api::Kind::Revision => vec![
                            namespace.clone(),
                            name.clone(),
                            text("/metadata/labels/serving.knative.dev~1service"),
                            text("/status/runtime"),
                            text("/status/desired"),
                            text("/status/ready"),
                            text("/status/coldStarts"),
                            text("/status/lastTerminationReason"),
                            text("/status/problem"),
                            revision_conditions(item),
                        ],
                        kinetic_api::Kind::Broker => vec![
                            namespace.clone(),
                            name.clone(),
                            format!("/{namespace}/{name}"),
                            text("/status/address/audience"),
                            item.pointer("/status/policies")
                                .and_then(Value::as_array)
                                .map(|p| {
                                    p.iter()
                                        .filter_map(|p| p["name"].as_str())
                                        .collect::<Vec<_>>()
                                        .join(",")
                                })
                                .unwrap_or_default(),
                        ],
                        kinetic_api::Kind::EventPolicy => vec![
                            namespace.clone(),
                            name.clone(),
                            item.pointer("/status/from")
                                .and_then(Value::as_array)
                                .map(|p| {
                                    p.iter()
                                        .filter_map(Value::as_str)
                                        .collect::<Vec<_>>()
                                        .join(",")
                                })
                                .unwrap_or_default(),
                        ],
                        _ => vec![
                            namespace,
                            name,
                            item.pointer("/spec/broker")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_owned(),
                            item.pointer("/spec/subscriber/uri")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                                .or_else(|| {
                                    let reference = item.pointer("/spec/subscriber/ref")?;
                                    Some(format!(
                                        "{}/{}",
                                        reference["kind"].as_str()?,
                                        reference["name"].as_str()?
                                    ))
                                })
                                .unwrap_or_default(),
                            match item.pointer("/status/ready") {
                                Some(Value::Bool(true)) => "True",
                                Some(Value::Bool(false)) => "False",
                                // The server does not deliver (`kinetic broker`): it cannot tell.
                                _ => "Unknown",
                            }
                            .to_owned(),
                        ]
                        .into_iter()
                        .chain(
                            wide.then(|| {
                                // `-`: nothing sent yet, a destination of kinetic's own, or a
                                // server that does not deliver.
                                ["/status/concurrencyLimit", "/status/inFlight"].map(|pointer| {
                                    item.pointer(pointer)
                                        .map_or_else(|| "-".to_owned(), Value::to_string)
                                })
                            })
                            .into_iter()
                            .flatten(),
                        )
                        .collect(),
                    }
                })
                .collect();
            let header: &[&str] = match kind_name {
                kinetic_api::Kind::Broker => {
                    &["NAMESPACE", "NAME", "INGRESS PATH", "AUDIENCE", "POLICIES"]
                }
                kinetic_api::Kind::EventPolicy => &["NAMESPACE", "NAME", "FROM"],
                kinetic_api::Kind::Service => {
                    &["NAMESPACE", "NAME", "URL", "LATEST", "TRAFFIC", "READY"]
                }
                kinetic_api::Kind::Revision => &[
                    "NAMESPACE",
                    "NAME",
                    "SERVICE",
                    "RUNTIME",
                    "DESIRED",
                    "READY",
                    "COLD STARTS",
                    "LAST EXIT",
                    "PROBLEM",
                    "CONDITIONS",
                ],
                _ if wide => &[
                    "NAMESPACE",
                    "NAME",
                    "BROKER",
                    "SUBSCRIBER",
                    "READY",
                    "LIMIT",
                    "IN FLIGHT",
                ],
                _ => &["NAMESPACE", "NAME", "BROKER", "SUBSCRIBER", "READY"],
            };
            print_table(header, &rows);
            if kind_name == kinetic_api::Kind::Trigger {
                print_trigger_problems(&items);
            }
        }
    }
    Ok(())
}

/// Under the triggers' table: every trigger that does not deliver, and why (disabled by a `410`
/// answer, an unresolvable subscriber, an unreadable signing secret, …).
/// A revision's conditions that are not as asked: `Type=False(Reason): message`, joined by ` | `.
fn revision_conditions(item: &Value) -> String {
    item.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|conditions| {
            conditions
                .iter()
                .map(|c| {
                    format!(
                        "{}={}({}): {}",
                        c["type"].as_str().unwrap_or(""),
                        c["status"].as_str().unwrap_or(""),
                        c["reason"].as_str().unwrap_or(""),
                        c["message"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .unwrap_or_default()
}

fn print_trigger_problems(items: &[Value]) {
    let problems: Vec<String> = items
        .iter()
        .filter(|item| item.pointer("/status/ready") == Some(&Value::Bool(false)))
        .map(|item| {
            let text = |pointer: &str| item.pointer(pointer).and_then(Value::as_str).unwrap_or("");
            format!(
                "{}/{} is not ready: {}",
                text("/metadata/namespace"),
                text("/metadata/name"),
                text("/status/problem")
            )
        })
        .collect();
    if !problems.is_empty() {
        println!();
        for problem in problems {
            println!("{problem}");
        }
    }
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("   ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub async fn delete(
    server: &ServerArg,
    files: &[PathBuf],
    kind: Option<&str>,
    name: Option<&str>,
    namespace: &str,
) -> anyhow::Result<()> {
    let mut targets: Vec<(kinetic_api::Kind, String, String)> = Vec::new();
    for file in apply::expand_paths(files)? {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {name}"))?;
        for resource in
            kinetic_api::parse_documents(&name, &text).map_err(|e| anyhow::anyhow!("{e}"))?
        {
            let key = resource.key();
            targets.push((key.kind, key.namespace, key.name));
        }
    }
    match (kind, name) {
        (Some(kind), Some(name)) => {
            let named = kinetic_api::Kind::named(kind).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown resource type `{kind}`; use {}",
                    crate::api::resource_types()
                )
            })?;
            targets.push((named, namespace.to_owned(), name.to_owned()));
        }
        (None, None) => {}
        _ => bail!("give KIND and NAME (e.g. `kinetic delete trigger orders`) or -f FILE"),
    }
    if targets.is_empty() {
        bail!("nothing to delete: give -f FILE or KIND NAME");
    }
    let client = server.client()?;
    for (kind, namespace, name) in targets {
        let plural = kind.plural();
        call(
            &server.server,
            client.delete(server.url(&format!("/api/v1/{plural}/{namespace}/{name}"))),
        )
        .await?;
        println!(
            "{} {namespace}/{name} deleted",
            kind.as_str().to_ascii_lowercase()
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// Broker as NAMESPACE/NAME.
    #[arg(long)]
    pub broker: String,
    #[arg(long = "type")]
    pub ty: String,
    #[arg(long)]
    pub source: String,
    /// Event id; a new UUID when absent.
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long)]
    pub subject: Option<String>,
    /// JSON data.
    #[arg(long, conflicts_with = "data_file")]
    pub data: Option<String>,
    /// File whose content is the data (JSON when it parses, bytes otherwise).
    #[arg(long)]
    pub data_file: Option<PathBuf>,
    /// Extension attribute NAME=VALUE (repeatable).
    #[arg(short = 'e', long = "extension")]
    pub extensions: Vec<String>,
    #[command(flatten)]
    pub ingress: IngressArg,
}

pub async fn send(args: &SendArgs) -> anyhow::Result<()> {
    let Some((namespace, broker)) = args
        .broker
        .split_once('/')
        .filter(|(n, b)| !n.is_empty() && !b.is_empty())
    else {
        bail!(
            "--broker `{}` must be NAMESPACE/NAME, e.g. default/default",
            args.broker
        );
    };
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut builder = EventBuilderV10::new()
        .id(&id)
        .source(args.source.clone())
        .ty(args.ty.clone())
        .time(chrono::Utc::now());
    if let Some(subject) = &args.subject {
        builder = builder.subject(subject.clone());
    }
    for extension in &args.extensions {
        let Some((name, value)) = extension.split_once('=') else {
            bail!("--extension `{extension}` must be NAME=VALUE");
        };
        builder = builder.extension(name, value);
    }
    match (&args.data, &args.data_file) {
        (Some(data), _) => {
            let value: Value = serde_json::from_str(data)
                .with_context(|| format!("--data is not valid JSON: {data}"))?;
            builder = builder.data("application/json", value);
        }
        (None, Some(path)) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading --data-file {}", path.display()))?;
            builder = match serde_json::from_slice::<Value>(&bytes) {
                Ok(value) => builder.data("application/json", value),
                Err(_) => builder.data("application/octet-stream", bytes),
            };
        }
        (None, None) => {}
    }
    let event = builder
        .build()
        .map_err(|error| anyhow::anyhow!("the event is invalid: {error}"))?;
    let (headers, body) = kinetic_api::cloudevent::encode_binary(&event);
    let url = format!(
        "{}/{namespace}/{broker}",
        args.ingress.ingress.trim_end_matches('/')
    );
    let mut request = trusting(
        reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)),
        args.ingress.ca_file.as_deref(),
    )?
    .build()
    .context("building the HTTP client")?
    .post(url)
    .headers(headers)
    .body(body);
    if let Some(token) = args.ingress.token()? {
        request = request.bearer_auth(token);
    }
    call(&args.ingress.ingress, request).await?;
    println!("Event {id} accepted by {namespace}/{broker}.");
    Ok(())
}

pub fn cesql_eval(expression: &str, event: Option<&Path>) -> anyhow::Result<ExitCode> {
    let event = match event {
        Some(path) => {
            let text = std::fs::read(path)
                .with_context(|| format!("reading --event {}", path.display()))?;
            let headers = {
                let mut map = http::HeaderMap::new();
                map.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(
                        kinetic_api::cloudevent::STRUCTURED_CONTENT_TYPE,
                    ),
                );
                map
            };
            let (_, mut events) =
                kinetic_api::cloudevent::decode(&headers, &bytes::Bytes::from(text))
                    .map_err(|error| anyhow::anyhow!("--event {}: {error}", path.display()))?;
            events.remove(0)
        }
        None => EventBuilderV10::new()
            .id("1")
            .source("/kinetic/cesql")
            .ty("dev.kinetic.cesql.eval")
            .build()
            .map_err(|error| anyhow::anyhow!("{error}"))?,
    };
    let report = kinetic_cesql::eval_report(expression, &event);
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// `kinetic dlq list`: one page, `(limit, continue token)`; the token of the next page, if any,
/// is said on stderr.
pub async fn dlq_list(
    server: &ServerArg,
    trigger: Option<&str>,
    (limit, after): (u32, Option<&str>),
    output: Output,
) -> anyhow::Result<()> {
    let mut request = server
        .client()?
        .get(server.url("/api/v1/deadletters"))
        .query(&[("limit", limit.to_string())]);
    if let Some(trigger) = trigger {
        request = request.query(&[("trigger", trigger)]);
    }
    if let Some(after) = after {
        request = request.query(&[("continue", after)]);
    }
    let answer = call(&server.server, request).await?;
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    if let Some(next) = answer["metadata"]["continue"].as_str() {
        eprintln!("More dead letters follow: add --continue {next}");
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&items)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(&items)?),
        Output::Table | Output::Wide => {
            let text = |v: &Value| match v {
                Value::Null => "-".to_owned(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|item| {
                    vec![
                        text(&item["id"]),
                        text(&item["trigger"]),
                        text(&item["event"]["type"]),
                        text(&item["event"]["id"]),
                        text(&item["attempts"]),
                        text(&item["lastStatus"]),
                        error_summary(item),
                        text(&item["deadLetterSink"]),
                        text(&item["replayCount"]),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID", "TRIGGER", "TYPE", "EVENT ID", "ATTEMPTS", "STATUS", "ERROR", "SINK",
                    "REPLAYS",
                ],
                &rows,
            );
        }
    }
    Ok(())
}

/// Why a dead letter died, for the table: the last error and the first line of the subscriber's
/// last answer (its reason, when it gave one), cut to fit a terminal line.
fn error_summary(item: &Value) -> String {
    const MOST: usize = 80;
    let error = item["lastError"].as_str().unwrap_or("-");
    let reason = item["lastResponse"]
        .as_str()
        .and_then(|body| body.lines().map(str::trim).find(|line| !line.is_empty()));
    let summary = match reason {
        Some(reason) => format!("{error}: {reason}"),
        None => error.to_owned(),
    };
    if summary.chars().count() <= MOST {
        summary
    } else {
        let cut: String = summary.chars().take(MOST - 1).collect();
        format!("{cut}…")
    }
}

/// Most pages `dlq replay --trigger --all` asks for (each replays up to 1,000).
const REPLAY_PAGES: usize = 10_000;

pub async fn dlq_replay(
    server: &ServerArg,
    ids: Vec<String>,
    trigger: Option<String>,
    all: bool,
) -> anyhow::Result<()> {
    let body = match (trigger, all, ids.is_empty()) {
        (None, false, false) => serde_json::json!({ "ids": ids }),
        (Some(trigger), true, true) => serde_json::json!({ "trigger": trigger, "all": true }),
        (Some(_), false, _) => {
            bail!("--trigger replays every dead letter of the trigger; add --all to confirm")
        }
        _ => bail!("give dead-letter IDs, or --trigger NAMESPACE/NAME --all"),
    };
    // A trigger's dead letters are replayed a page per request, until none is left.
    let mut replayed = 0;
    for _ in 0..REPLAY_PAGES {
        let answer = call(
            &server.server,
            server
                .client()?
                .post(server.url("/api/v1/deadletters/replay"))
                .json(&body),
        )
        .await?;
        replayed += answer["replayed"].as_array().map(Vec::len).unwrap_or(0);
        for id in answer["notReplayed"].as_array().into_iter().flatten() {
            println!(
                "not replayed (unknown id, or its trigger is gone): {}",
                id.as_str().unwrap_or("?")
            );
        }
        if answer["more"] != Value::Bool(true) {
            break;
        }
    }
    println!("{replayed} dead letter(s) queued for delivery.");
    Ok(())
}

pub async fn dlq_delete(
    server: &ServerArg,
    ids: Vec<String>,
    trigger: Option<String>,
    all: bool,
) -> anyhow::Result<()> {
    let client = server.client()?;
    let mut deleted = 0;
    match (ids.is_empty(), trigger, all) {
        (false, None, false) => {
            let mut failed = 0;
            for id in &ids {
                let url = server.url(&format!("/api/v1/deadletters/{id}"));
                match call(&server.server, client.delete(url)).await {
                    Ok(answer) => deleted += answer["deleted"].as_u64().unwrap_or(0),
                    Err(error) => {
                        failed += 1;
                        eprintln!("{id}: {error:#}");
                    }
                }
            }
            if failed > 0 {
                bail!("{deleted} dead letter(s) deleted; {failed} could not be");
            }
        }
        (true, Some(trigger), false) => {
            let request = client
                .delete(server.url("/api/v1/deadletters"))
                .query(&[("trigger", trigger)]);
            deleted = call(&server.server, request).await?["deleted"]
                .as_u64()
                .unwrap_or(0);
        }
        (true, None, true) => {
            let request = client
                .delete(server.url("/api/v1/deadletters"))
                .query(&[("all", "true")]);
            deleted = call(&server.server, request).await?["deleted"]
                .as_u64()
                .unwrap_or(0);
        }
        _ => bail!(
            "say which dead letters to delete: --id ID (repeatable), --trigger NAMESPACE/NAME, or --all"
        ),
    }
    println!("{deleted} dead letter(s) deleted.");
    Ok(())
}

/// `kinetic logs SERVICE`: the last lines its instances wrote, oldest first.
pub async fn logs(
    server: &ServerArg,
    namespace: &str,
    service: &str,
    tail: usize,
) -> anyhow::Result<()> {
    let request = server
        .client()?
        .get(server.url(&format!("/api/v1/services/{namespace}/{service}/logs")))
        .query(&[("limit", tail.to_string())]);
    let answer = call(&server.server, request).await?;
    for line in answer["lines"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        println!(
            "{} {}/{} {}: {}",
            line["time"].as_str().unwrap_or_default(),
            line["revision"].as_str().unwrap_or_default(),
            line["instance"],
            line["stream"].as_str().unwrap_or_default(),
            line["text"].as_str().unwrap_or_default(),
        );
    }
    Ok(())
}

/// `kinetic get sources`: every running source with its state.
async fn sources(
    server: &ServerArg,
    namespace: Option<&str>,
    output: Output,
) -> anyhow::Result<()> {
    let answer = call(
        &server.server,
        server.client()?.get(server.url("/api/v1/sources")),
    )
    .await?;
    let items: Vec<Value> = answer["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|item| namespace.is_none_or(|ns| item["namespace"] == ns))
        .collect();
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&items)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(&items)?),
        Output::Table | Output::Wide => {
            let text = |item: &Value, field: &str| match &item[field] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|item| {
                    [
                        "kind",
                        "namespace",
                        "name",
                        "ready",
                        "sink",
                        "events",
                        "failures",
                        "lastEventAt",
                        "nextAt",
                        "backlog",
                        "lastError",
                    ]
                    .iter()
                    .map(|field| text(item, field))
                    .collect()
                })
                .collect();
            print_table(
                &[
                    "KIND",
                    "NAMESPACE",
                    "NAME",
                    "READY",
                    "SINK",
                    "EVENTS",
                    "FAILURES",
                    "LAST EVENT",
                    "NEXT",
                    "BACKLOG",
                    "LAST ERROR",
                ],
                &rows,
            );
        }
    }
    Ok(())
}

/// `30s`, `15m`, `1h`, `7d`, or ISO-8601 (`PT1H`).
pub fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let units = [('s', 1u64), ('m', 60), ('h', 3600), ('d', 86_400)];
    if let Some((number, unit)) = text
        .char_indices()
        .last()
        .and_then(|(at, unit)| Some((text[..at].parse::<u64>().ok()?, unit)))
        && let Some((_, seconds)) = units.iter().find(|(u, _)| *u == unit)
    {
        return Ok(std::time::Duration::from_secs(
            number.saturating_mul(*seconds),
        ));
    }
    kinetic_api::duration::parse(text)
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 30s, 15m, 1h, 7d or PT1H"))
}

/// `kinetic token create`: a token from the server's issuer.
pub async fn token_create(
    server: &ServerArg,
    sub: &str,
    audience: &str,
    ttl: std::time::Duration,
) -> anyhow::Result<()> {
    let answer = call(
        &server.server,
        server
            .client()?
            .post(server.url("/api/v1/tokens"))
            .json(&serde_json::json!({
                "sub": sub,
                "audience": audience,
                "ttl": format!("PT{}S", ttl.as_secs()),
            })),
    )
    .await?;
    println!("{}", answer["token"].as_str().unwrap_or_default());
    eprintln!(
        "Token for `{sub}`, audience `{audience}`, issued by {}, valid until {}. Send it as `Authorization: Bearer TOKEN`.",
        answer["issuer"].as_str().unwrap_or("?"),
        answer["expires"].as_str().unwrap_or("?")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::error_summary;

    #[test]
    fn error_summary_adds_the_first_line_of_the_answer_and_fits_a_line() {
        let cases = [
            (json!({"lastError": "HTTP 503"}), "HTTP 503"),
            (
                json!({"lastError": "HTTP 503", "lastResponse": ""}),
                "HTTP 503",
            ),
            (
                json!({"lastError": "HTTP 422", "lastResponse": "\n  order 7 refused: negative amount\nat line 2\n"}),
                "HTTP 422: order 7 refused: negative amount",
            ),
            (json!({"lastError": null}), "-"),
        ];
        for (item, expected) in cases {
            assert_eq!(error_summary(&item), expected, "{item}");
        }
        let long =
            error_summary(&json!({"lastError": "HTTP 400", "lastResponse": "é".repeat(200)}));
        assert_eq!(long.chars().count(), 80, "{long}");
        assert!(
            long.starts_with("HTTP 400: éé") && long.ends_with('…'),
            "{long}"
        );
    }
}
