//! The spec parsers a user's files go through — a cluster spec (YAML) and the settings file
//! (TOML) — under bounded property tests, the same entry points the cargo-fuzz targets in
//! `fuzz/` drive: any text gives a value or an error, never a panic.

use proptest::prelude::*;

const YAML: &[&str] = &[
    "nodes: 2\ngpu: H100\nhours: 3\n",
    "cpu: true\nnodes: 1\nconnectivity: high\n",
    "nodes: 4\nmin_vram_gib: 40\nmax_price: \"2.50\"\nasset: io\n",
    "- a\n- b\n",
    "nodes: [1, 2]\ngpu: {x: 1}\n",
];
const TOML: &[&str] = &[
    "[worker.start]\ncountry = \"DE\"\nruntime = \"docker\"\n",
    "[global]\njson = true\n[worker.start]\nray_package = [\"a\", \"b\"]\n",
    "[worker]\nstart = 3\n",
    "[worker.start]\nfloor_price = 1.5\nno_egress_policy = true\n",
];

fn edited(samples: &'static [&'static str]) -> impl Strategy<Value = String> {
    (0..samples.len(), prop::collection::vec((any::<usize>(), any::<char>(), 0u8..3), 0..8)).prop_map(
        move |(i, edits)| {
            let mut chars: Vec<char> = samples[i].chars().collect();
            for (at, c, kind) in edits {
                let at = at % (chars.len() + 1);
                match kind {
                    0 if at < chars.len() => chars[at] = c,
                    1 => chars.insert(at, c),
                    _ if at < chars.len() => drop(chars.remove(at)),
                    _ => {}
                }
            }
            chars.into_iter().collect()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn cluster_specs_never_panic(text in prop_oneof![edited(YAML), ".{0,200}"]) {
        let _ = herd_cli::commands::request::parse_spec(&text, "fuzz.yaml");
    }

    #[test]
    fn settings_files_never_panic(text in prop_oneof![edited(TOML), ".{0,200}"]) {
        let _ = herd_cli::config_file::fuzz_settings(&text);
    }
}

#[test]
fn the_samples_are_real_files() {
    assert!(herd_cli::commands::request::parse_spec(YAML[0], "a.yaml").is_ok());
    assert!(herd_cli::config_file::fuzz_settings(TOML[0]).is_ok());
}
