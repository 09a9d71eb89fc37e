//! Fuzzes the minimal DER reader for certificates (`der::facts`,
//! `der::renewal_parts` and `der::details`) on arbitrary bytes; asserts that neither panics (no out-of-bounds
//! slice, no overflow in lengths or dates).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pylon::der;

fuzz_target!(|data: &[u8]| {
    let _ = der::facts(data);
    let _ = der::renewal_parts(data);
    let _ = der::details(data);
});
