//! The access log (`[accessLog]`): one line per request in Traefik's common log format or as
//! JSON, to stdout or a file. Requests hand their record to a channel; one writer task formats
//! and writes, so a slow disk never holds up a request (records beyond the channel's capacity
//! are counted and dropped).

use std::{
    io::Write,
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::{header, Request, Response};
use tokio::sync::mpsc;

use crate::config::model::AccessLog as Settings;

const CAPACITY: usize = 16 * 1024;

pub struct AccessLog {
    sender: mpsc::Sender<Record>,
    count: AtomicU64,
    dropped: AtomicU64,
}

/// A request's details, taken before it is consumed.
pub struct Entry {
    client: IpAddr,
    method: String,
    path: String,
    protocol: &'static str,
    host: String,
    referer: String,
    user_agent: String,
    start: SystemTime,
}

pub struct Record {
    entry: Entry,
    status: u16,
    size: Option<u64>,
    router: Option<String>,
    server: Option<String>,
    duration: Duration,
    count: u64,
}

impl Entry {
    pub fn begin<B>(req: &Request<B>, client: IpAddr) -> Entry {
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
        Entry {
            client,
            method: req.method().to_string(),
            path: req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string(),
            protocol: match req.version() {
                http::Version::HTTP_2 => "HTTP/2.0",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            host: req.uri().host().map(str::to_string).unwrap_or_else(|| header(header::HOST)),
            referer: header(header::REFERER),
            user_agent: header(header::USER_AGENT),
            start: SystemTime::now(),
        }
    }

    pub fn finish<B>(
        self,
        response: &Response<B>,
        router: Option<String>,
        server: Option<String>,
        duration: Duration,
    ) -> Record {
        let size = response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        Record { entry: self, status: response.status().as_u16(), size, router, server, duration, count: 0 }
    }
}

impl AccessLog {
    /// Opens the destination and starts the writer task.
    pub fn start(settings: &Settings) -> std::io::Result<AccessLog> {
        let mut out: Box<dyn Write + Send> = match &settings.file {
            Some(path) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
            None => Box::new(std::io::stdout()),
        };
        let json = settings.json;
        let (sender, mut receiver) = mpsc::channel::<Record>(CAPACITY);
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            while let Some(record) = receiver.blocking_recv() {
                line.clear();
                if json {
                    line.push_str(&record.json());
                } else {
                    line.push_str(&record.common());
                }
                line.push('\n');
                let _ = out.write_all(line.as_bytes());
                if receiver.is_empty() {
                    let _ = out.flush();
                }
            }
        });
        Ok(AccessLog { sender, count: AtomicU64::new(0), dropped: AtomicU64::new(0) })
    }

    pub fn record(&self, mut record: Record) {
        record.count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if self.sender.try_send(record).is_err() && self.dropped.fetch_add(1, Ordering::Relaxed).is_multiple_of(10_000)
        {
            tracing::warn!("the access log cannot keep up; dropping records");
        }
    }
}

impl Record {
    /// Traefik's common log format.
    fn common(&self) -> String {
        let e = &self.entry;
        let size = self.size.map_or("-".to_string(), |s| s.to_string());
        format!(
            "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" {} \"{}\" \"{}\" {}ms",
            e.client,
            clf_time(e.start),
            e.method,
            e.path,
            e.protocol,
            self.status,
            size,
            e.referer,
            e.user_agent,
            self.count,
            self.router.as_deref().unwrap_or("-"),
            self.server.as_deref().unwrap_or("-"),
            self.duration.as_millis()
        )
    }

    /// Traefik's JSON field names.
    fn json(&self) -> String {
        let e = &self.entry;
        serde_json::json!({
            "ClientHost": e.client.to_string(),
            "RequestMethod": e.method,
            "RequestPath": e.path,
            "RequestProtocol": e.protocol,
            "RequestHost": e.host,
            "DownstreamStatus": self.status,
            "DownstreamContentSize": self.size,
            "RouterName": self.router,
            "ServiceURL": self.server,
            "Duration": self.duration.as_nanos() as u64,
            "StartUTC": e.start.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            "RequestCount": self.count,
            "request_User-Agent": e.user_agent,
            "request_Referer": e.referer,
        })
        .to_string()
    }
}

/// `10/Oct/2000:13:55:36 +0000`, in UTC.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let (year, month, day, hour, minute, second) = crate::calendar::from_unix(secs);
    format!("{day:02}/{}/{year}:{hour:02}:{minute:02}:{second:02} +0000", MONTHS[(month - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_log_format_matches_traefiks() {
        let req = Request::builder()
            .uri("/a?b=c")
            .header("host", "example.com")
            .header("user-agent", "curl/8")
            .body(())
            .unwrap();
        let mut entry = Entry::begin(&req, "10.0.0.1".parse().unwrap());
        entry.start = UNIX_EPOCH + Duration::from_secs(971_186_136);
        let response = Response::builder().status(200).header("content-length", "42").body(()).unwrap();
        let mut record =
            entry.finish(&response, Some("web".into()), Some("http://127.0.0.1:9".into()), Duration::from_millis(3));
        record.count = 7;
        assert_eq!(
            record.common(),
            r#"10.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET /a?b=c HTTP/1.1" 200 42 "-" "curl/8" 7 "web" "http://127.0.0.1:9" 3ms"#
        );
        let json: serde_json::Value = serde_json::from_str(&record.json()).unwrap();
        assert_eq!(json["DownstreamStatus"], 200);
        assert_eq!(json["RequestHost"], "example.com");
    }
}
