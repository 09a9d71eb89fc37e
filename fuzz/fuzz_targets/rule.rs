//! Fuzzes routing-rule parsing (`Rule::parse`) on arbitrary text and, when a rule parses, matching
//! it against a few fixed requests and listing its hosts; asserts that none of it panics or
//! overflows the stack, and that every required host is among the rule's hosts.
#![no_main]

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use pylon::data::routing::rule::{RequestView, Rule};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(rule) = Rule::parse(&text) else { return };

    let mut headers = HeaderMap::new();
    headers.insert("x-canary", HeaderValue::from_static("always"));
    headers.append("accept", HeaderValue::from_static("text/html"));
    headers.append("accept", HeaderValue::from_static("application/json"));
    headers.insert("x-raw", HeaderValue::from_bytes(b"caf\xc3\xa9 \xff").unwrap());
    let empty = HeaderMap::new();
    let v4: IpAddr = "10.1.2.3".parse().unwrap();
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    let mapped: IpAddr = "::ffff:192.168.0.7".parse().unwrap();
    let requests = [
        RequestView {
            host: "a.example",
            path: "/api/v1",
            query: None,
            method: &Method::GET,
            headers: &headers,
            client_ip: v4,
        },
        RequestView {
            host: "b.example",
            path: "/",
            query: Some("debug=1&name=jo%20e&x=%zz&+=+"),
            method: &Method::POST,
            headers: &empty,
            client_ip: v6,
        },
        RequestView {
            host: "",
            path: "",
            query: Some(""),
            method: &Method::OPTIONS,
            headers: &headers,
            client_ip: mapped,
        },
        RequestView {
            host: "xn--caf-dma.example",
            path: "/caf%C3%A9/%2e%2e",
            query: Some("&&=&a=%ff%fe"),
            method: &Method::DELETE,
            headers: &headers,
            client_ip: "127.0.0.1".parse().unwrap(),
        },
    ];
    for request in &requests {
        rule.matches(request);
    }
    let hosts = rule.hosts();
    if let Some(required) = rule.required_hosts() {
        for host in &required {
            assert!(hosts.contains(host), "required host {host:?} is not among the rule's hosts {hosts:?}");
        }
    }
});
