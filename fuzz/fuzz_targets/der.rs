//! Fuzzes the minimal DER reader for certificates (`acme::der::facts` and
//! `acme::der::renewal_parts`) on arbitrary bytes; asserts that neither panics (no out-of-bounds
//! slice, no overflow in lengths or dates).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pylon::acme::der;

fuzz_target!(|data: &[u8]| {
    let _ = der::facts(data);
    let _ = der::renewal_parts(data);
});
