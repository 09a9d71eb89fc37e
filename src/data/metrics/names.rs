//! Names of routers, services and entrypoints as small numbers, so that the request path keys
//! its series by integers instead of hashing and cloning strings. A name gets its number when a
//! table is built (on the control plane) and keeps it for the process's life; the request path
//! only carries the numbers the table holds.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

/// A name's number; 0 is "none".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(pub(super) u32);

impl Name {
    pub const NONE: Name = Name(0);
}

#[derive(Default)]
struct Interner {
    numbers: HashMap<Arc<str>, Name>,
    /// Index `n - 1` holds the name of `Name(n)`.
    names: Vec<Arc<str>>,
}

static INTERNER: LazyLock<Mutex<Interner>> = LazyLock::new(Mutex::default);

/// What a name names: a router and a service of the same name are two series.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    EntryPoint,
    Router,
    Service,
}

impl Kind {
    /// Kept in front of the name in the interner; two bytes, taken off by [`resolve`].
    fn tag(self) -> &'static str {
        match self {
            Kind::EntryPoint => "e:",
            Kind::Router => "r:",
            Kind::Service => "s:",
        }
    }
}

/// The number of `name`, given it on first sight. Called while building tables, never per request.
pub fn intern(kind: Kind, name: &str) -> Name {
    let tagged = format!("{}{name}", kind.tag());
    let mut interner = INTERNER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&number) = interner.numbers.get(tagged.as_str()) {
        return number;
    }
    let name: Arc<str> = Arc::from(tagged);
    interner.names.push(name.clone());
    let number = Name(u32::try_from(interner.names.len()).unwrap_or(u32::MAX));
    interner.numbers.insert(name, number);
    number
}

/// The names of `numbers`, in one lock: what a scrape labels its series with.
pub fn resolve(numbers: impl IntoIterator<Item = Name>) -> HashMap<Name, Arc<str>> {
    let interner = INTERNER.lock().unwrap_or_else(|e| e.into_inner());
    numbers
        .into_iter()
        .filter_map(|n| {
            let tagged = interner.names.get(usize::try_from(n.0).ok()?.checked_sub(1)?)?;
            Some((n, Arc::from(tagged.get(2..)?)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_number() {
        let a = intern(Kind::Router, "names-test-a");
        let b = intern(Kind::Router, "names-test-b");
        assert_ne!(a, b);
        assert_eq!(intern(Kind::Router, "names-test-a"), a);
        assert_ne!(intern(Kind::Service, "names-test-a"), a, "a service is not the router of its name");
        assert_ne!(a, Name::NONE);
        let names = resolve([a, b, Name::NONE]);
        assert_eq!(&*names[&a], "names-test-a");
        assert_eq!(&*names[&b], "names-test-b");
        assert!(!names.contains_key(&Name::NONE));
    }
}
