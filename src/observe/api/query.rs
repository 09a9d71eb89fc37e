//! The list endpoints' query parameters, as Traefik reads them (`pkg/api/criterion.go`,
//! `sort.go`): `search`, `status`, `serviceName`, `middlewareName` filters, `sortBy` and
//! `direction`, and paging with `page` and `per_page` (the next page in `X-Next-Page`).

use super::records::Record;

const PER_PAGE: usize = 100;

#[derive(Debug, Default, PartialEq)]
pub struct Query {
    pub search: String,
    pub status: String,
    pub service_name: String,
    pub middleware_name: String,
    pub sort_by: String,
    pub descending: bool,
    pub page: Option<String>,
    pub per_page: Option<String>,
}

/// Which list is asked for: they sort on different fields.
#[derive(Clone, Copy, PartialEq)]
pub enum List {
    Routers,
    Services,
    Middlewares,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let mut q = Query::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value);
            match decode(key).as_str() {
                "search" => q.search = value,
                "status" => q.status = value,
                "serviceName" => q.service_name = value,
                "middlewareName" => q.middleware_name = value,
                "sortBy" => q.sort_by = value,
                // Traefik sorts descending for any direction but `asc`.
                "direction" => q.descending = !(value.is_empty() || value == "asc"),
                "page" => q.page = Some(value),
                "per_page" => q.per_page = Some(value),
                _ => {}
            }
        }
        q
    }

    /// Whether `record` passes the filters of `list`.
    pub fn keeps(&self, list: List, record: &Record) -> bool {
        let status = self.status.is_empty() || record.status.as_str().eq_ignore_ascii_case(&self.status);
        let needle = self.search.to_lowercase();
        let found = |v: &str| v.to_lowercase().contains(&needle);
        let search = needle.is_empty() || found(&record.name) || (list == List::Routers && found(&record.rule));
        if list != List::Routers {
            return status && search;
        }
        let service = match self.service_name.as_str() {
            "" => true,
            wanted if record.service.contains('@') => wanted == record.service,
            wanted => wanted.split('@').next() == Some(record.service.as_str()),
        };
        let middleware = self.middleware_name.is_empty() || record.middlewares.contains(&self.middleware_name);
        status && search && service && middleware
    }

    /// Sorts by `sortBy` (name by default), then by name.
    pub fn sort(&self, list: List, records: &mut [Record]) {
        records.sort_by(|a, b| {
            let by = match (list, self.sort_by.as_str()) {
                (_, "provider") => a.provider.cmp(&b.provider),
                (_, "status") => a.status.as_str().cmp(b.status.as_str()),
                (List::Routers, "priority") => a.priority.cmp(&b.priority),
                (List::Routers, "rule") => a.rule.cmp(&b.rule),
                (List::Routers, "service") => a.service.cmp(&b.service),
                (List::Routers, "entryPoints") => a.entry_points.cmp(&b.entry_points),
                (List::Services | List::Middlewares, "type") => a.kind.cmp(&b.kind),
                (List::Services, "servers") => a.servers.cmp(&b.servers),
                _ => std::cmp::Ordering::Equal,
            };
            let by = by.then_with(|| a.name.cmp(&b.name));
            if self.descending {
                by.reverse()
            } else {
                by
            }
        });
    }

    /// The page asked for, of `total` records: its range and the next page (1 when this is
    /// the last), or Traefik's message for a bad request.
    pub fn page(&self, total: usize) -> Result<(std::ops::Range<usize>, usize), String> {
        let number = |key: &str, raw: &Option<String>, default: usize| match raw.as_deref() {
            None | Some("") => Ok(default),
            Some(text) => match text.parse::<i64>() {
                Ok(n) if n > 0 => Ok(n as usize),
                Ok(n) => Err(format!("invalid request: {key}: {n}")),
                Err(_) => Err(format!("invalid request: {key}: 0")),
            },
        };
        let per_page = number("per_page", &self.per_page, PER_PAGE)?;
        let page = number("page", &self.page, 1)?;
        let start = (page - 1).saturating_mul(per_page);
        if start != 0 && start >= total {
            return Err(format!("invalid request: page: {page}, per_page: {per_page}"));
        }
        let end = start.saturating_add(per_page).min(total);
        let next = if page.saturating_mul(per_page) < total { page + 1 } else { 1 };
        Ok((start..end, next))
    }
}

/// Percent-decoding of a query's part, `+` as a space.
pub fn decode(text: &str) -> String {
    unescape(text, true)
}

/// Percent-decoding of a path segment, where `+` is itself (Go's `url.PathUnescape`).
pub fn decode_path(text: &str) -> String {
    unescape(text, false)
}

fn unescape(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_follows_traefik() {
        let q =
            |page: &str, per: &str| Query { page: Some(page.into()), per_page: Some(per.into()), ..Query::default() };
        assert_eq!(Query::default().page(3), Ok((0..3, 1)));
        assert_eq!(q("1", "2").page(3), Ok((0..2, 2)));
        assert_eq!(q("2", "2").page(3), Ok((2..3, 1)));
        assert_eq!(q("3", "2").page(3), Err("invalid request: page: 3, per_page: 2".into()));
        assert_eq!(q("0", "2").page(3), Err("invalid request: page: 0".into()));
        assert_eq!(q("1", "-1").page(3), Err("invalid request: per_page: -1".into()));
        assert_eq!(q("1", "5").page(0), Ok((0..0, 1)), "an empty first page is fine");
    }

    #[test]
    fn queries_are_decoded() {
        let q = Query::parse(Some("search=a%20b&status=Enabled&serviceName=svc%40etcd&sortBy=priority&direction=desc"));
        assert_eq!((q.search.as_str(), q.status.as_str(), q.service_name.as_str()), ("a b", "Enabled", "svc@etcd"));
        assert!(q.descending && q.sort_by == "priority");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("a+b%2Fc"), "a b/c");
        assert_eq!(decode_path("a+b%40etcd"), "a+b@etcd");
    }
}
