//! A real Prometheus server scraping given targets every second, and its HTTP query API.

use std::{process::Command, time::Duration};

use super::{free_port, get, require, start_server, Process};

pub struct Prometheus {
    pub port: u16,
    _dir: tempfile::TempDir,
    _process: Process,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, at `/metrics`) every second.
    pub async fn start(targets: &[String]) -> Prometheus {
        require("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let list = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: pylon\n    \
                 static_configs:\n      - targets: [{list}]\n"
            ),
        )
        .unwrap();
        let data = dir.path().join("data");
        let spawn = |log: std::fs::File| {
            let port = free_port();
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start prometheus");
            (child, port)
        };
        let ready = |port: &u16| {
            let url = format!("http://127.0.0.1:{port}/-/ready");
            Box::pin(async move { matches!(get(&url).await, Ok((200, _))) })
                as std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        };
        let (process, port) = start_server("prometheus", dir.path(), spawn, ready).await;
        Prometheus { port, _dir: dir, _process: process }
    }

    /// Evaluates an instant query; the values of its result vector.
    pub async fn query(&self, query: &str) -> Vec<f64> {
        let url = format!("http://127.0.0.1:{}/api/v1/query?query={}", self.port, encode(query));
        let (status, body) = get(&url).await.unwrap_or_else(|e| panic!("query {query}: {e}"));
        assert_eq!(status, 200, "query {query}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        answer["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("query {query}: {body}"))
            .iter()
            .filter_map(|r| r["value"][1].as_str()?.parse().ok())
            .collect()
    }

    /// Waits until every target has been scraped since `after` (Unix seconds) and is up.
    pub async fn scraped_after(&self, after: f64, deadline: Duration) {
        let url = format!("http://127.0.0.1:{}/api/v1/targets", self.port);
        super::eventually("Prometheus scraped every target after the traffic", deadline, || {
            let url = url.clone();
            async move {
                let Ok((200, body)) = get(&url).await else { return false };
                let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let targets = answer["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
                !targets.is_empty()
                    && targets.iter().all(|t| {
                        t["health"] == "up"
                            && t["lastScrape"].as_str().and_then(rfc3339_unix).is_some_and(|at| at > after)
                    })
            }
        })
        .await;
    }
}

/// Percent-encodes a query string value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Unix seconds of an RFC 3339 time as Prometheus writes it (`2026-12-03T14:00:00.123456789Z`).
fn rfc3339_unix(text: &str) -> Option<f64> {
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.trim_end_matches('Z');
    let (time, offset) = match time.rfind(['+', '-']) {
        Some(i) => (&time[..i], &time[i..]),
        None => (time, "+00:00"),
    };
    let mut t = time.split(':');
    let (h, min, s): (f64, f64, f64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let sign = if offset.starts_with('-') { -1.0 } else { 1.0 };
    let mut o = offset[1..].split(':');
    let offset_s =
        sign * (o.next()?.parse::<f64>().ok()? * 3600.0 + o.next().unwrap_or("0").parse::<f64>().ok()? * 60.0);
    let days = pylon::calendar::days_from_civil(y, m, day) as f64;
    Some(days * 86400.0 + h * 3600.0 + min * 60.0 + s - offset_s)
}
