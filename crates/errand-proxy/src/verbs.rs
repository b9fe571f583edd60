//! The command line's admin verbs, `errand stats`, `errand purge` and `errand retry`: each one
//! request to a running errand's admin listener, its answer printed.

use anyhow::{Context, bail};
use axum::http::{StatusCode, header};
use errand::pattern::Key;
use serde_json::{Value, json};

/// Sends one request to a running errand's admin listener; the JSON answer, or an error that
/// names the URL and what went wrong.
async fn call(
    client: &crate::cli::AdminClient,
    method: http::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let base = client.admin.trim_end_matches('/');
    let url = format!("{base}{path}");
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("--admin: {base:?} is not a URL"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => bail!("--admin: {base:?} must be an http:// or https:// URL of the admin listener"),
    };
    let mut request = http::Request::builder().method(method).uri(uri);
    if let Some(token) = &client.admin_token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let payload = match body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            bytes::Bytes::from(body.to_string())
        }
        None => bytes::Bytes::new(),
    };
    let request = request
        .body(Full::new(payload))
        .context("cannot build the request")?;
    let builder = Client::builder(TokioExecutor::new());
    let sent = if https {
        let tls = crate::tls::admin_client_config(client.admin_ca_file.as_deref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        builder.build(connector).request(request)
    } else {
        builder.build_http().request(request)
    };
    let response = tokio::time::timeout(std::time::Duration::from_secs(30), sent)
        .await
        .with_context(|| format!("--admin: {url} did not answer within 30 s"))?
        .map_err(|e| anyhow::anyhow!("--admin: cannot reach {url}: {}", chain(&e)))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("--admin: {url} broke off its answer"))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&bytes).into_owned()}));
    if status == StatusCode::UNAUTHORIZED {
        bail!("--admin-token: {url} refused it (401)");
    }
    if !status.is_success() {
        let error = value.get("error").and_then(Value::as_str).unwrap_or("");
        bail!("{url} answered {status}: {error}");
    }
    Ok(value)
}

/// An error and its causes on one line (a TLS failure is two or three causes down).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// Prints for a terminal (the verbs' output is the command's product).
#[allow(clippy::print_stdout)]
fn print(text: &str) {
    println!("{text}");
}

/// `errand stats`.
pub(crate) async fn stats_verb(args: crate::cli::StatsArgs) -> anyhow::Result<()> {
    let value = call(&args.client, http::Method::GET, "/api/stats", None).await?;
    if args.client.json {
        print(&value.to_string());
        return Ok(());
    }
    let n = |name: &str| value.get(name).and_then(Value::as_u64).unwrap_or(0);
    print(&format!(
        "entries   fresh {}  stale {}  pending {}  failed {}  pass {}  ({})",
        n("fresh"),
        n("stale"),
        n("pending"),
        n("failed"),
        n("pass"),
        bytesize::ByteSize(n("bytes"))
    ));
    print(&format!(
        "queue     ready {}  scheduled {}  running {}  oldest ready {:.1}s",
        n("ready"),
        n("scheduled"),
        n("running"),
        n("oldest_ready_ms") as f64 / 1000.0
    ));
    Ok(())
}

/// `errand purge`.
pub(crate) async fn purge_verb(args: crate::cli::PurgeArgs) -> anyhow::Result<()> {
    if let Some(key) = &args.key
        && Key::parse(key).is_none()
    {
        bail!("--key: {key:?} is not an entry key (32 hex digits)");
    }
    let body = json!({
        "key": args.key,
        "prefix": args.prefix,
        "tag": args.tag,
        "uri": args.uri,
        "soft": args.soft,
    });
    let value = call(&args.client, http::Method::POST, "/api/purge", Some(body)).await?;
    if args.client.json {
        print(&value.to_string());
    } else {
        let n = value.get("purged").and_then(Value::as_u64).unwrap_or(0);
        let how = if args.soft { "marked stale" } else { "purged" };
        print(&format!("{n} entries {how}"));
    }
    Ok(())
}

/// `errand retry`.
pub(crate) async fn retry_verb(args: crate::cli::RetryArgs) -> anyhow::Result<()> {
    let Some(key) = Key::parse(&args.key) else {
        bail!("--key: {:?} is not an entry key (32 hex digits)", args.key);
    };
    let path = format!("/api/entries/{}/retry", key.to_hex());
    let value = call(&args.client, http::Method::POST, &path, None).await?;
    if args.client.json {
        print(&value.to_string());
    } else {
        let uri = value.get("uri").and_then(Value::as_str).unwrap_or("");
        let job = value
            .pointer("/detail/job")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        print(&format!("{uri}: pending again (job {job})"));
    }
    Ok(())
}
