//! The cluster request as flags or a YAML spec file (same fields as the API), shared by
//! `herd cluster create` and `herd market quote`.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use herd_core::{Asset, ConnectivityTier, SecurityTier};
use herd_proto::api::CreateCluster;

use super::parse_country;

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// YAML spec with the API's fields (nodes, gpu, gpus_per_node, countries, regions,
    /// connectivity, security, max_price_per_gpu_hour, hours, asset, …); flags override it.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// GPU model from the catalog, e.g. H100, "RTX 4090", A100-80GB.
    #[arg(long, conflicts_with = "cpu")]
    gpu: Option<String>,
    /// CPU-only nodes.
    #[arg(long)]
    cpu: bool,
    /// Instead of a model: any model with at least this much memory per GPU (GiB)…
    #[arg(long, conflicts_with = "cpu")]
    min_vram: Option<u32>,
    /// …and at least this FP16 throughput per GPU (TFLOPS)…
    #[arg(long, conflicts_with = "cpu")]
    min_tflops: Option<u32>,
    /// …from this vendor.
    #[arg(long, conflicts_with = "cpu", value_parser = ["nvidia", "amd", "apple"])]
    vendor: Option<String>,
    /// Number of nodes (whole machines).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=512))]
    nodes: Option<u32>,
    /// GPUs in each node (default 1 for GPU requests).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    gpus_per_node: Option<u32>,
    /// Minimum CPU cores per node.
    #[arg(long)]
    cpu_cores: Option<u32>,
    /// Minimum memory per node, in GiB.
    #[arg(long)]
    ram_gib: Option<u32>,
    /// Allowed country (repeatable).
    #[arg(long = "country", value_parser = parse_country)]
    countries: Vec<String>,
    /// Allowed region (repeatable): north-america, south-america, europe, africa, middle-east, asia, oceania.
    #[arg(long = "region")]
    regions: Vec<String>,
    /// Country to avoid (repeatable).
    #[arg(long = "deny-country", value_parser = parse_country)]
    deny_countries: Vec<String>,
    /// Minimum connectivity tier: none, low (100/10 Mbit/s), medium (400/300), high (800/600), ultra (1600/1200).
    #[arg(long, value_parser = str::parse::<ConnectivityTier>)]
    connectivity: Option<ConnectivityTier>,
    /// Minimum security tier: any, verified, datacenter.
    #[arg(long, value_parser = str::parse::<SecurityTier>)]
    security: Option<SecurityTier>,
    /// Minimum device reputation (0..=1000).
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..=1000))]
    min_reputation: Option<u16>,
    /// Where the nodes may be relative to each other: anywhere, same-country or same-supplier.
    #[arg(long, value_parser = ["anywhere", "same-country", "same-supplier"])]
    colocation: Option<String>,
    /// Price ceiling in USD per GPU-hour (per node-hour for CPU), e.g. 2.50.
    #[arg(long)]
    max_price: Option<String>,
    /// Lease length in hours.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=720))]
    hours: Option<u32>,
    /// Payment asset: usdc (+2 % fee), io or credits.
    #[arg(long, value_parser = str::parse::<Asset>)]
    asset: Option<Asset>,
    /// Willing to wait for capacity: no urgency premium.
    #[arg(long)]
    flexible: bool,
}

/// The spec file's request, and whether it asked for CPU nodes (`cpu: true`, the file's
/// `--cpu`: not an API field, since a request without GPU fields is a CPU request).
fn read_spec(path: &PathBuf) -> anyhow::Result<(CreateCluster, bool)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_spec(&text, &path.display().to_string())
}

/// A cluster spec file's text (`place` names it in errors). Public for fuzzers: any text
/// gives a request or an error, never a panic.
pub fn parse_spec(text: &str, place: &str) -> anyhow::Result<(CreateCluster, bool)> {
    // Syntax first, so that a broken file is reported as one, with its line.
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("{place}: not valid YAML: {e}"))?;
    let Some(fields) = value.as_mapping_mut() else {
        bail!("{place}: expected the request's fields (nodes: 2, gpu: H100, …), not a {}", yaml_kind(&value));
    };
    let cpu = match fields.remove("cpu") {
        None => false,
        Some(serde_yaml::Value::Bool(cpu)) => cpu,
        Some(other) => bail!("{place}: cpu must be true or false, got {}", yaml_kind(&other)),
    };
    let request: CreateCluster = serde_yaml::from_value(value).map_err(|e| anyhow::anyhow!("{place}: {e}"))?;
    if cpu && (request.gpu.is_some() || request.min_vram_gib.is_some() || request.min_tflops.is_some()) {
        bail!("{place}: cpu: true asks for CPU nodes, but the file also names GPU fields");
    }
    Ok((request, cpu))
}

fn yaml_kind(value: &serde_yaml::Value) -> &'static str {
    match value {
        serde_yaml::Value::Null => "empty document",
        serde_yaml::Value::Bool(_) => "boolean",
        serde_yaml::Value::Number(_) => "number",
        serde_yaml::Value::String(_) => "string",
        serde_yaml::Value::Sequence(_) => "list",
        serde_yaml::Value::Mapping(_) => "mapping",
        serde_yaml::Value::Tagged(_) => "tagged value",
    }
}

impl RequestArgs {
    /// The request the flags and the spec file describe (flags win).
    pub fn to_request(&self) -> anyhow::Result<CreateCluster> {
        let (mut request, file_cpu) = match &self.file {
            Some(path) => read_spec(path)?,
            None => (CreateCluster::default(), false),
        };
        let gpu_flags =
            self.gpu.is_some() || self.min_vram.is_some() || self.min_tflops.is_some() || self.vendor.is_some();
        if self.file.is_none() && !gpu_flags && !self.cpu {
            bail!("say what hardware: --gpu MODEL, GPU constraints (--min-vram, --min-tflops, --vendor), --cpu, or -f spec.yaml");
        }
        if self.cpu || (file_cpu && !gpu_flags) {
            request.gpu = None;
            request.min_vram_gib = None;
            request.min_tflops = None;
            request.vendor = None;
            request.gpus_per_node = None;
        }
        macro_rules! set {
            ($field:ident, $value:expr) => {
                if let Some(value) = $value {
                    request.$field = Some(value);
                }
            };
        }
        set!(gpu, self.gpu.clone());
        set!(min_vram_gib, self.min_vram);
        set!(min_tflops, self.min_tflops);
        set!(vendor, self.vendor.clone());
        set!(gpus_per_node, self.gpus_per_node);
        set!(cpu_cores, self.cpu_cores);
        set!(ram_gib, self.ram_gib);
        set!(connectivity, self.connectivity);
        set!(security, self.security);
        set!(min_reputation, self.min_reputation);
        set!(colocation, self.colocation.clone());
        set!(max_price_per_gpu_hour, self.max_price.clone());
        set!(hours, self.hours);
        set!(asset, self.asset);
        if let Some(nodes) = self.nodes {
            request.nodes = nodes;
        }
        if request.nodes == 0 {
            bail!("say how many nodes: --nodes N (or nodes: in the spec file)");
        }
        if !self.countries.is_empty() {
            request.countries = self.countries.clone();
            request.country = None;
        }
        if !self.regions.is_empty() {
            request.regions = self.regions.clone();
        }
        if !self.deny_countries.is_empty() {
            request.deny_countries = self.deny_countries.clone();
        }
        if self.flexible {
            request.start_now = Some(false);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        request: RequestArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<CreateCluster> {
        let flags = Flags::try_parse_from(std::iter::once("herd").chain(args.iter().copied()))?;
        flags.request.to_request()
    }

    #[test]
    fn a_spec_file_and_flags_merge_with_flags_winning() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("cluster.yaml");
        std::fs::write(
            &spec,
            "nodes: 2\ngpu: H100\ngpus_per_node: 8\nregions: [europe]\nconnectivity: high\nmax_price_per_gpu_hour: \"3.00\"\nasset: io\n",
        )
        .unwrap();
        let path = spec.to_str().unwrap();
        let request = parse(&["-f", path]).unwrap();
        assert_eq!((request.nodes, request.gpu.as_deref(), request.gpus_per_node), (2, Some("H100"), Some(8)));
        assert_eq!(request.connectivity, Some(ConnectivityTier::High));
        assert_eq!(request.asset, Some(Asset::Io));
        let overridden = parse(&["-f", path, "--nodes", "4", "--country", "de", "--flexible"]).unwrap();
        assert_eq!((overridden.nodes, overridden.countries.clone()), (4, vec!["DE".to_string()]));
        assert_eq!(overridden.regions, ["europe"], "kept from the file");
        assert_eq!(overridden.start_now, Some(false));
        let cpu = parse(&["-f", path, "--cpu"]).unwrap();
        assert_eq!((cpu.gpu, cpu.gpus_per_node), (None, None), "--cpu clears the file's GPU fields");
    }

    #[test]
    fn bad_specs_and_flags_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("typo.yaml");
        std::fs::write(&spec, "nodes: 1\ngpus: H100\n").unwrap();
        let error = parse(&["-f", spec.to_str().unwrap()]).unwrap_err().to_string();
        assert!(error.contains("unknown field `gpus`"), "{error}");
        std::fs::write(&spec, "{not yaml at all\n").unwrap();
        let error = parse(&["-f", spec.to_str().unwrap()]).unwrap_err().to_string();
        assert!(error.contains("not valid YAML") && error.contains("line"), "{error}");
        std::fs::write(&spec, "- nodes: 1\n").unwrap();
        let error = parse(&["-f", spec.to_str().unwrap()]).unwrap_err().to_string();
        assert!(error.contains("not a list"), "{error}");
        std::fs::write(&spec, "nodes: 2\ncpu: true\n").unwrap();
        let cpu = parse(&["-f", spec.to_str().unwrap()]).unwrap();
        assert_eq!((cpu.nodes, cpu.gpu), (2, None), "cpu: true is the file's --cpu");
        std::fs::write(&spec, "nodes: 2\ncpu: true\ngpu: H100\n").unwrap();
        assert!(parse(&["-f", spec.to_str().unwrap()]).unwrap_err().to_string().contains("also names GPU fields"));
        assert!(parse(&["--gpu", "H100"]).unwrap_err().to_string().contains("--nodes N"));
        assert!(parse(&["--nodes", "1"]).unwrap_err().to_string().contains("say what hardware"));
        assert!(parse(&["--nodes", "1", "--cpu", "--connectivity", "warp"]).is_err());
        assert!(parse(&["--nodes", "1", "--gpu", "H100", "--cpu"]).is_err(), "conflicting hardware");
    }
}
