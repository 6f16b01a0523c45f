//! `text-filter`: a plugin of `acme:text/filter`, a world unrelated to
//! wasmplug's reference world (no identity, no init). The embedding test runs
//! it through the embedder's own `bindgen!`, to prove the host library is
//! generic over the embedder's world. `apply` asks the host's `settings` for
//! `mode`: `upper` uppercases, `reverse` reverses the characters, anything
//! else (or no setting) returns the input unchanged.

wit_bindgen::generate!({
    world: "filter",
    path: "../../tests/wit/filter.wit",
});

use acme::text::settings;

struct TextFilter;

impl Guest for TextFilter {
    fn apply(input: String) -> String {
        match settings::get("mode").as_deref() {
            Some("upper") => input.to_uppercase(),
            Some("reverse") => input.chars().rev().collect(),
            _ => input,
        }
    }
}

export!(TextFilter);
