#![no_main]
//! See `pushwire_fuzz::publish_request`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| pushwire_fuzz::publish_request::check(bytes));
