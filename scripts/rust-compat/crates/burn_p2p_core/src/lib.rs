//! The few burn_p2p_core types the reference client names, with the JSON
//! shapes PROTOCOL.md lists (serde's default encodings).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapabilityEstimate {
    pub preferred_backends: Vec<String>,
    pub work_units_per_second: f64,
    pub target_window_seconds: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MergePolicy {
    WeightedMean,
    NormClippedWeightedMean,
    TrimmedMean,
    Ema,
    QualityWeightedEma,
    Custom(String),
}

/// Untagged, so variant order decides: a JSON integer becomes `Integer`,
/// anything with a fraction or exponent becomes `Float`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricValue {
    Integer(i64),
    Float(f64),
    Bool(bool),
    Text(String),
}
