//! The market API: turning a request into a placement (`parse_request`), quotes, prices, and
//! the reservation that cluster creation commits.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use herd_core::catalog::{self, GPU_MODELS};
use herd_core::geo::{self, Region};
use herd_core::money::{apply_bps, parse_usd, RESERVATION_FEE_BPS};
use herd_core::{Address, Asset, GpuVendor, Micros, Timestamp};
use herd_market::index::CPU_ONLY;
use herd_market::matching::{Colocation, Hardware, Location, Placement, Refusal, Request};
use herd_market::pricing::QuoteTerms;
use herd_proto::api::{CreateCluster, ErrorBody, MarketPrice, Quote, QuotedNode};

use super::validate_country;
use crate::app::{now, App};
use crate::auth::{random_entropy, Caller};
use crate::error::{ApiError, ApiJson, ApiResult};

pub const NODES_MAX: u32 = 512;
pub const GPUS_PER_NODE_MAX: u32 = 64;
pub const HOURS_MAX: u32 = 720;
pub const QUOTE_VALIDITY_MS: i64 = 5 * 60 * 1000;

/// A validated request and the terms around it.
pub struct Parsed {
    pub request: Request,
    pub hours: u32,
    pub asset: Asset,
    /// For the cluster record: a single pinned country, if any.
    pub country: Option<String>,
}

fn country_bytes(country: &str) -> [u8; 2] {
    country.as_bytes().try_into().expect("validated as two letters")
}

/// Validates a request: 400 for malformed values, 422 for what no catalog model can satisfy.
pub fn parse_request(body: &CreateCluster) -> ApiResult<Parsed> {
    if body.nodes == 0 || body.nodes > NODES_MAX {
        return Err(ApiError::bad_request(format!("nodes must be 1..={NODES_MAX}, got {}", body.nodes)));
    }
    let hours = body.hours.unwrap_or(1);
    if hours == 0 || hours > HOURS_MAX {
        return Err(ApiError::bad_request(format!("hours must be 1..={HOURS_MAX}, got {hours}")));
    }
    let wants_gpu =
        body.gpu.is_some() || body.min_vram_gib.is_some() || body.min_tflops.is_some() || body.vendor.is_some();
    let hardware = if wants_gpu {
        let vendor = match body.vendor.as_deref() {
            None => None,
            Some("nvidia") => Some(GpuVendor::Nvidia),
            Some("amd") => Some(GpuVendor::Amd),
            Some("apple") => Some(GpuVendor::Apple),
            Some(other) => {
                return Err(ApiError::bad_request(format!("unknown vendor {other:?}: expected nvidia, amd or apple")))
            }
        };
        let named = match &body.gpu {
            Some(name) => Some(catalog::resolve(name).map_err(ApiError::unprocessable)?),
            None => None,
        };
        let models: Vec<u8> = GPU_MODELS
            .iter()
            .filter(|m| named.as_ref().is_none_or(|named| named.iter().any(|n| n.name == m.name)))
            .filter(|m| body.min_vram_gib.is_none_or(|v| m.vram_gib >= v))
            .filter(|m| body.min_tflops.is_none_or(|t| m.fp16_tflops >= t))
            .filter(|m| vendor.is_none_or(|v| m.vendor == v))
            .map(catalog::model_index)
            .collect();
        if models.is_empty() {
            return Err(ApiError::unprocessable(format!(
                "no catalog GPU model meets these constraints; models (VRAM GiB, FP16 TFLOPS): {}",
                GPU_MODELS
                    .iter()
                    .map(|m| format!("{} ({}, {})", m.name, m.vram_gib, m.fp16_tflops))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let per_node = body.gpus_per_node.unwrap_or(1);
        if per_node == 0 || per_node > GPUS_PER_NODE_MAX {
            return Err(ApiError::bad_request(format!(
                "gpus_per_node must be 1..={GPUS_PER_NODE_MAX}, got {per_node}"
            )));
        }
        Hardware::Gpu { models, per_node: per_node as u8 }
    } else if body.gpus_per_node.is_some() {
        return Err(ApiError::bad_request(
            "gpus_per_node needs a GPU model or GPU constraints; omit it for a CPU cluster",
        ));
    } else {
        Hardware::Cpu
    };
    let mut allow: Vec<String> = body.countries.clone();
    allow.extend(body.country.clone());
    let mut label: Vec<String> = body.regions.clone();
    label.extend(allow.iter().cloned());
    for country in allow.iter().chain(&body.deny_countries) {
        validate_country(country)?;
    }
    for region in &body.regions {
        let region: Region = region.parse().map_err(ApiError::bad_request)?;
        allow.extend(geo::countries_of(region).map(str::to_owned));
    }
    let single_country = (allow.len() == 1).then(|| allow[0].clone());
    let location = Location {
        allow: (!allow.is_empty()).then(|| allow.iter().map(|c| country_bytes(c)).collect()),
        deny: body.deny_countries.iter().map(|c| country_bytes(c)).collect(),
        label: label.join(", "),
    };
    let reputation_min = body.min_reputation.unwrap_or(0);
    if reputation_min > 1000 {
        return Err(ApiError::bad_request(format!("min_reputation must be 0..=1000, got {reputation_min}")));
    }
    let colocation = match body.colocation.as_deref() {
        None | Some("anywhere") => Colocation::Anywhere,
        Some("same-country") => Colocation::SameCountry,
        Some("same-supplier") => Colocation::SameSupplier,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown colocation {other:?}: expected anywhere, same-country or same-supplier"
            )))
        }
    };
    let price_ceiling_micros =
        body.max_price_per_gpu_hour.as_deref().map(parse_usd).transpose().map_err(ApiError::bad_request)?;
    let cores = body.cpu_cores.unwrap_or(0);
    let ram = body.ram_gib.unwrap_or(0);
    if cores > 4096 || ram > 65_535 {
        return Err(ApiError::bad_request("cpu_cores must be ≤ 4096 and ram_gib ≤ 65535"));
    }
    let request = Request {
        hardware,
        nodes: body.nodes,
        cpu_cores_min: cores as u16,
        ram_gib_min: ram as u16,
        location,
        connectivity_min: body.connectivity.unwrap_or_default(),
        security_min: body.security.unwrap_or_default(),
        reputation_min,
        colocation,
        price_ceiling_micros,
        terms: QuoteTerms { hours, start_now: body.start_now.unwrap_or(true) },
        supplier: None,
        multi_node: body.nodes > 1,
    };
    Ok(Parsed { request, hours, asset: body.asset.unwrap_or_default(), country: single_country })
}

pub fn refusal_error(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Impossible(_) => ApiError::unprocessable(refusal.to_string()),
        Refusal::NoCapacity { .. } => ApiError::no_capacity(refusal.to_string()),
    }
}

fn model_name(model: u8) -> Option<String> {
    (model != CPU_ONLY).then(|| GPU_MODELS[model as usize].name.to_owned())
}

pub fn quoted_nodes(placement: &Placement) -> Vec<QuotedNode> {
    placement
        .nodes
        .iter()
        .map(|n| QuotedNode {
            device_id: Address::from_public_key(&n.device),
            country: String::from_utf8_lossy(&n.country).into_owned(),
            connectivity: n.connectivity,
            security: n.security,
            reputation: n.reputation,
            gpu_model: model_name(n.model),
            gpus: u32::from(n.gpus),
            unit_price_micros: n.unit_price_micros,
            node_hour_micros: n.node_hour_micros,
        })
        .collect()
}

/// Prices a list of nodes for a lease: fees broken out, integer micros throughout.
pub fn price(
    id: String,
    expires_at: Timestamp,
    hardware: String,
    nodes: Vec<QuotedNode>,
    hours: u32,
    asset: Asset,
) -> Quote {
    let per_hour_micros: Micros = nodes.iter().map(|n| n.node_hour_micros).sum();
    let subtotal_micros = per_hour_micros * Micros::from(hours);
    let reservation_fee_micros = apply_bps(subtotal_micros, RESERVATION_FEE_BPS);
    let payment_fee_micros = apply_bps(subtotal_micros, asset.payment_fee_bps());
    Quote {
        id,
        expires_at,
        hardware,
        nodes,
        hours,
        asset,
        per_hour_micros,
        subtotal_micros,
        reservation_fee_micros,
        payment_fee_micros,
        total_micros: subtotal_micros + reservation_fee_micros + payment_fee_micros,
    }
}

/// What the request would cost now, from the devices the market would place it on; nothing
/// is held (`quote` holds it).
pub fn estimate(app: &App, body: &CreateCluster, id: String) -> ApiResult<Quote> {
    let parsed = parse_request(body)?;
    let placement = {
        let market = app.market.lock();
        market.index.place(&parsed.request, &market.prices)
    }
    .map_err(refusal_error)?;
    Ok(price(
        id,
        Timestamp(now().0 + QUOTE_VALIDITY_MS),
        parsed.request.hardware_label(),
        quoted_nodes(&placement),
        parsed.hours,
        parsed.asset,
    ))
}

/// The exact price of a request now, held for 5 minutes: create the cluster with its id.
#[utoipa::path(post, path = "/v1/market/quote", request_body = CreateCluster, security(("api_key" = [])),
    responses((status = 201, body = Quote), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn quote(
    State(app): State<App>,
    Caller(owner): Caller,
    ApiJson(body): ApiJson<CreateCluster>,
) -> ApiResult<(StatusCode, Json<Quote>)> {
    if body.quote_id.is_some() {
        return Err(ApiError::bad_request("quote_id belongs in cluster creation, not in a quote request"));
    }
    let id = format!("q-{}", herd_core::ClusterId::from_entropy(random_entropy()).as_str().trim_start_matches("cl-"));
    let quote = estimate(&app, &body, id.clone())?;
    let at = now();
    let request_json = serde_json::to_string(&body).expect("requests serialise");
    let quote_json = serde_json::to_string(&quote).expect("quotes serialise");
    app.store.create_quote(&id, &owner, &request_json, &quote_json, quote.expires_at, at).await?;
    Ok((StatusCode::CREATED, Json(quote)))
}

/// Per GPU model: supply, use and the current market price with its 24 h change.
#[utoipa::path(get, path = "/v1/market/prices", responses((status = 200, body = Vec<MarketPrice>)))]
pub async fn prices(State(app): State<App>) -> ApiResult<Json<Vec<MarketPrice>>> {
    let summary = app.store.market_summary().await?;
    Ok(Json(price_rows(&app, &summary)))
}

/// The price table from a (model or None for CPU, state, devices, GPUs) summary; states other
/// than ready and hired are ignored.
pub fn price_rows(app: &App, summary: &[(Option<String>, String, u64, u64)]) -> Vec<MarketPrice> {
    let market = app.market.lock();
    let mut rows: Vec<MarketPrice> = Vec::new();
    for (index, model) in GPU_MODELS.iter().enumerate() {
        let sum = |state: &str, devices: bool| -> u64 {
            summary
                .iter()
                .filter(|s| s.0.as_deref() == Some(model.name) && s.1 == state)
                .map(|s| if devices { s.2 } else { s.3 })
                .sum()
        };
        let (ready, hired) = (sum("ready", true), sum("hired", true));
        let (gpus_ready, gpus_hired) = (sum("ready", false), sum("hired", false));
        rows.push(MarketPrice {
            model: model.name.to_owned(),
            devices_online: ready + hired,
            devices_hired: hired,
            devices_idle: ready,
            gpus_online: gpus_ready + gpus_hired,
            gpus_hired,
            utilisation_permille: (gpus_hired * 1000).checked_div(gpus_ready + gpus_hired).unwrap_or(0),
            price_micros: market.prices.market_price(index),
            change_24h_micros: market.prices.change_24h(index),
        });
    }
    let cpu = |state: &str| summary.iter().filter(|s| s.0.is_none() && s.1 == state).map(|s| s.2).sum::<u64>();
    let (ready, hired) = (cpu("ready"), cpu("hired"));
    rows.push(MarketPrice {
        model: "CPU".into(),
        devices_online: ready + hired,
        devices_hired: hired,
        devices_idle: ready,
        gpus_online: 0,
        gpus_hired: 0,
        utilisation_permille: (hired * 1000).checked_div(ready + hired).unwrap_or(0),
        price_micros: catalog::CPU_CORE_HOUR_MICROS,
        change_24h_micros: 0,
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_validate_with_precise_errors() {
        let base = CreateCluster { nodes: 2, ..Default::default() };
        assert!(matches!(parse_request(&base).unwrap().request.hardware, Hardware::Cpu));
        let big = CreateCluster { min_vram_gib: Some(100), ..base.clone() };
        let Hardware::Gpu { models, per_node } = parse_request(&big).unwrap().request.hardware else { panic!() };
        assert_eq!(per_node, 1);
        assert!(models.iter().all(|m| GPU_MODELS[*m as usize].vram_gib >= 100));
        let impossible = CreateCluster { min_vram_gib: Some(10_000), ..base.clone() };
        assert_eq!(parse_request(&impossible).err().unwrap().status, StatusCode::UNPROCESSABLE_ENTITY);
        let region =
            CreateCluster { regions: vec!["europe".into()], deny_countries: vec!["DE".into()], ..base.clone() };
        let location = parse_request(&region).unwrap().request.location;
        assert!(location.allow.unwrap().contains(b"FR") && location.deny == vec![*b"DE"]);
        let bad_region = CreateCluster { regions: vec!["atlantis".into()], ..base.clone() };
        assert!(parse_request(&bad_region).err().unwrap().message.contains("europe"));
        let colocated = CreateCluster { colocation: Some("same-rack".into()), ..base.clone() };
        assert!(parse_request(&colocated).err().unwrap().message.contains("same-supplier"));
        let too_dear = CreateCluster { max_price_per_gpu_hour: Some("lots".into()), ..base };
        assert_eq!(parse_request(&too_dear).err().unwrap().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn quotes_break_out_fees() {
        let node = QuotedNode {
            device_id: Address::from_public_key(&[1; 32]),
            country: "US".into(),
            connectivity: Default::default(),
            security: Default::default(),
            reputation: 500,
            gpu_model: Some("H100".into()),
            gpus: 8,
            unit_price_micros: 2_500_000,
            node_hour_micros: 20_000_000,
        };
        let usdc = price("q".into(), Timestamp(0), "8×H100".into(), vec![node.clone()], 10, Asset::Usdc);
        assert_eq!(usdc.subtotal_micros, 200_000_000);
        assert_eq!(usdc.reservation_fee_micros, 500_000, "0.25 %");
        assert_eq!(usdc.payment_fee_micros, 4_000_000, "2 % in USDC");
        assert_eq!(usdc.total_micros, 204_500_000);
        let io = price("q".into(), Timestamp(0), "8×H100".into(), vec![node], 10, Asset::Io);
        assert_eq!((io.payment_fee_micros, io.total_micros), (0, 200_500_000));
    }
}
