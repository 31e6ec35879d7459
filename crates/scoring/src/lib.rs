//! Early-warning scores for Vigil: NEWS2 (Royal College of Physicians 2017), MEWS and
//! qSOFA, the selection of vital signs from FHIR Observations, and the FHIR resources that
//! record a score (RiskAssessment) and raise a banner (Flag). Pure: no IO.
//!
//! # NEWS2 rounding rule
//! The RCP chart is in whole units (respiratory rate, SpO2, systolic BP, pulse) and one
//! decimal (temperature), with no gaps between bands. A measured value is first rounded to
//! the chart's precision, **half up** (`20.5 → 21`, `20.49 → 20`, `38.05 → 38.1`,
//! `36.04 → 36.0`), then looked up. Decimal inputs are rounded on their decimal value
//! (a tiny epsilon absorbs binary floating-point error such as `38.05 * 10 = 380.4999…`).
//!
//! # Missing parameters
//! A parameter that was not measured is never scored 0: it is listed in
//! [`News2Result::missing`] and the result is `partial`. Its total is then a lower bound.
//! Home kits rarely capture respiratory rate or consciousness, so partial scores are the
//! normal case at home and must be shown as such. Non-finite values count as missing.

pub mod fhir;
pub mod observation;
pub mod time;

pub use fhir::{
    close_flag, flag, risk_assessment, risk_assessment_with_scale, should_flag, FlagStatus,
};
pub use observation::{
    latest_in_window, spo2_scale_from_conditions, vitals_from_observation, VitalReading,
};

/// A vital-sign parameter of the early-warning scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Vital {
    /// Breaths per minute.
    RespiratoryRate,
    /// Oxygen saturation, %.
    SpO2,
    /// Systolic blood pressure, mmHg.
    SystolicBp,
    /// Pulse, beats per minute.
    HeartRate,
    /// Body temperature, °C.
    Temperature,
    /// ACVPU level (as a [`VitalReading`] value: [`Acvpu::code_value`]).
    Consciousness,
    /// Air or supplemental oxygen (as a [`VitalReading`] value: 1 on oxygen, 0 on air).
    SupplementalOxygen,
}

impl Vital {
    /// Every parameter, in the order of the RCP chart.
    pub const CHART_ORDER: [Vital; 7] = [
        Vital::RespiratoryRate,
        Vital::SpO2,
        Vital::SupplementalOxygen,
        Vital::SystolicBp,
        Vital::HeartRate,
        Vital::Consciousness,
        Vital::Temperature,
    ];

    /// Human-readable name, lower case (for notes and flag texts).
    pub fn label(self) -> &'static str {
        match self {
            Vital::RespiratoryRate => "respiratory rate",
            Vital::SpO2 => "SpO2",
            Vital::SystolicBp => "systolic blood pressure",
            Vital::HeartRate => "pulse",
            Vital::Temperature => "temperature",
            Vital::Consciousness => "consciousness",
            Vital::SupplementalOxygen => "air or oxygen",
        }
    }
}

/// Level of consciousness on the ACVPU scale (NEWS2: Alert 0, anything else 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acvpu {
    /// Alert.
    Alert,
    /// New confusion.
    NewConfusion,
    /// Responds to voice.
    Voice,
    /// Responds to pain.
    Pain,
    /// Unresponsive.
    Unresponsive,
}

impl Acvpu {
    /// The number a [`VitalReading`] carries for this level: A 0, C 1, V 2, P 3, U 4.
    pub fn code_value(self) -> f64 {
        match self {
            Acvpu::Alert => 0.0,
            Acvpu::NewConfusion => 1.0,
            Acvpu::Voice => 2.0,
            Acvpu::Pain => 3.0,
            Acvpu::Unresponsive => 4.0,
        }
    }

    /// The inverse of [`code_value`](Acvpu::code_value); `None` for other numbers.
    pub fn from_code_value(v: f64) -> Option<Acvpu> {
        [
            Acvpu::Alert,
            Acvpu::NewConfusion,
            Acvpu::Voice,
            Acvpu::Pain,
            Acvpu::Unresponsive,
        ]
        .into_iter()
        .find(|a| a.code_value() == v)
    }
}

/// Which NEWS2 SpO2 scale applies to the patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SpO2Scale {
    /// The default (target 94–98%).
    #[default]
    Scale1,
    /// Hypercapnic respiratory failure with a prescribed 88–92% target (e.g. COPD).
    Scale2,
}

/// The observations a NEWS2 score is computed from; `None` = not measured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct News2Input {
    /// Breaths per minute.
    pub respiratory_rate: Option<f64>,
    /// Oxygen saturation, %.
    pub spo2: Option<f64>,
    /// On supplemental oxygen (true) or air (false).
    pub on_oxygen: Option<bool>,
    /// Systolic blood pressure, mmHg.
    pub systolic_bp: Option<f64>,
    /// Pulse, beats per minute.
    pub heart_rate: Option<f64>,
    /// Body temperature, °C.
    pub temperature_c: Option<f64>,
    /// ACVPU level.
    pub consciousness: Option<Acvpu>,
    /// The SpO2 scale for this patient.
    pub scale: SpO2Scale,
}

/// NEWS2 clinical-risk band (RCP Chart 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RiskBand {
    /// Total 0–4 and no single parameter scoring 3.
    Low,
    /// A single parameter scoring 3, total below 5.
    LowMedium,
    /// Total 5–6.
    Medium,
    /// Total 7 or more.
    High,
}

impl RiskBand {
    /// Lower-case label: `low`, `low-medium`, `medium`, `high`.
    pub fn label(self) -> &'static str {
        match self {
            RiskBand::Low => "low",
            RiskBand::LowMedium => "low-medium",
            RiskBand::Medium => "medium",
            RiskBand::High => "high",
        }
    }
}

/// A NEWS2 score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct News2Result {
    /// Sum of the parameter scores (0–20; a lower bound when `partial`).
    pub total: u32,
    /// The clinical-risk band.
    pub band: RiskBand,
    /// The score of each measured parameter, in chart order.
    pub parameter_scores: Vec<(Vital, u32)>,
    /// Parameters that were not measured, in chart order.
    pub missing: Vec<Vital>,
    /// Whether any single parameter scored 3.
    pub any_single_three: bool,
    /// Whether any parameter is missing.
    pub partial: bool,
}

impl News2Result {
    /// The score of one parameter, if it was measured.
    pub fn score_of(&self, vital: Vital) -> Option<u32> {
        self.parameter_scores
            .iter()
            .find(|(v, _)| *v == vital)
            .map(|&(_, s)| s)
    }
}

/// Round to an integer, half up (see the crate docs for why an epsilon).
fn round_int(x: f64) -> i64 {
    (x + 0.5 + 1e-9).floor() as i64
}

/// Round to tenths, half up, as an integer number of tenths.
fn round_tenths(x: f64) -> i64 {
    (x * 10.0 + 0.5 + 1e-9).floor() as i64
}

/// NEWS2 respiratory-rate score: ≤8 → 3, 9–11 → 1, 12–20 → 0, 21–24 → 2, ≥25 → 3.
pub fn news2_respiratory_rate(rr: f64) -> u32 {
    match round_int(rr) {
        ..=8 => 3,
        9..=11 => 1,
        12..=20 => 0,
        21..=24 => 2,
        _ => 3,
    }
}

/// NEWS2 SpO2 score. Scale 1: ≤91 → 3, 92–93 → 2, 94–95 → 1, ≥96 → 0. Scale 2: ≤83 → 3,
/// 84–85 → 2, 86–87 → 1, 88–92 → 0, ≥93 on air → 0, 93–94 on oxygen → 1, 95–96 → 2,
/// ≥97 → 3. With Scale 2 and the oxygen status unknown, ≥93 scores as on air (the lower
/// bound; the oxygen parameter is then reported missing).
pub fn news2_spo2(spo2: f64, scale: SpO2Scale, on_oxygen: Option<bool>) -> u32 {
    let s = round_int(spo2);
    match scale {
        SpO2Scale::Scale1 => match s {
            ..=91 => 3,
            92..=93 => 2,
            94..=95 => 1,
            _ => 0,
        },
        SpO2Scale::Scale2 => match s {
            ..=83 => 3,
            84..=85 => 2,
            86..=87 => 1,
            88..=92 => 0,
            _ if on_oxygen != Some(true) => 0,
            93..=94 => 1,
            95..=96 => 2,
            _ => 3,
        },
    }
}

/// NEWS2 air/oxygen score: oxygen → 2, air → 0.
pub fn news2_oxygen(on_oxygen: bool) -> u32 {
    if on_oxygen {
        2
    } else {
        0
    }
}

/// NEWS2 systolic-BP score: ≤90 → 3, 91–100 → 2, 101–110 → 1, 111–219 → 0, ≥220 → 3.
pub fn news2_systolic_bp(sbp: f64) -> u32 {
    match round_int(sbp) {
        ..=90 => 3,
        91..=100 => 2,
        101..=110 => 1,
        111..=219 => 0,
        _ => 3,
    }
}

/// NEWS2 pulse score: ≤40 → 3, 41–50 → 1, 51–90 → 0, 91–110 → 1, 111–130 → 2, ≥131 → 3.
pub fn news2_heart_rate(hr: f64) -> u32 {
    match round_int(hr) {
        ..=40 => 3,
        41..=50 => 1,
        51..=90 => 0,
        91..=110 => 1,
        111..=130 => 2,
        _ => 3,
    }
}

/// NEWS2 temperature score: ≤35.0 → 3, 35.1–36.0 → 1, 36.1–38.0 → 0, 38.1–39.0 → 1,
/// ≥39.1 → 2.
pub fn news2_temperature(t: f64) -> u32 {
    match round_tenths(t) {
        ..=350 => 3,
        351..=360 => 1,
        361..=380 => 0,
        381..=390 => 1,
        _ => 2,
    }
}

/// NEWS2 consciousness score: Alert → 0, new Confusion, Voice, Pain, Unresponsive → 3.
pub fn news2_consciousness(c: Acvpu) -> u32 {
    if c == Acvpu::Alert {
        0
    } else {
        3
    }
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

/// Compute NEWS2 (RCP 2017, Chart 1) and its band (Chart 2).
pub fn news2(input: &News2Input) -> News2Result {
    let mut scores = Vec::new();
    let mut missing = Vec::new();
    for vital in Vital::CHART_ORDER {
        let score = match vital {
            Vital::RespiratoryRate => finite(input.respiratory_rate).map(news2_respiratory_rate),
            Vital::SpO2 => finite(input.spo2).map(|s| news2_spo2(s, input.scale, input.on_oxygen)),
            Vital::SupplementalOxygen => input.on_oxygen.map(news2_oxygen),
            Vital::SystolicBp => finite(input.systolic_bp).map(news2_systolic_bp),
            Vital::HeartRate => finite(input.heart_rate).map(news2_heart_rate),
            Vital::Consciousness => input.consciousness.map(news2_consciousness),
            Vital::Temperature => finite(input.temperature_c).map(news2_temperature),
        };
        match score {
            Some(s) => scores.push((vital, s)),
            None => missing.push(vital),
        }
    }
    let total: u32 = scores.iter().map(|&(_, s)| s).sum();
    let any_single_three = scores.iter().any(|&(_, s)| s == 3);
    let band = match total {
        7.. => RiskBand::High,
        5..=6 => RiskBand::Medium,
        _ if any_single_three => RiskBand::LowMedium,
        _ => RiskBand::Low,
    };
    News2Result {
        total,
        band,
        parameter_scores: scores,
        partial: !missing.is_empty(),
        missing,
        any_single_three,
    }
}

/// The observations for MEWS; `None` = not measured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MewsInput {
    /// Systolic blood pressure, mmHg.
    pub systolic_bp: Option<f64>,
    /// Pulse, beats per minute.
    pub heart_rate: Option<f64>,
    /// Breaths per minute.
    pub respiratory_rate: Option<f64>,
    /// Body temperature, °C.
    pub temperature_c: Option<f64>,
    /// Level of consciousness (AVPU; new confusion scores as Voice).
    pub consciousness: Option<Acvpu>,
}

/// A MEWS score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MewsResult {
    /// Sum of the parameter scores (a lower bound when `missing` is not empty).
    pub total: u32,
    /// The score of each measured parameter.
    pub parameter_scores: Vec<(Vital, u32)>,
    /// Parameters that were not measured.
    pub missing: Vec<Vital>,
    /// Total ≥ 5, the usual trigger (death/ICU); many sites call at 4.
    pub trigger: bool,
}

/// Modified Early Warning Score with the table of clinical.md (same rounding rule as
/// NEWS2; temperature below 35.0 scores 2, 35.0–38.4 → 0, ≥38.5 → 2).
pub fn mews(input: &MewsInput) -> MewsResult {
    let sbp = |v: f64| match round_int(v) {
        ..=70 => 3,
        71..=80 => 2,
        81..=100 => 1,
        101..=199 => 0,
        _ => 2,
    };
    let hr = |v: f64| match round_int(v) {
        ..=40 => 2,
        41..=50 => 1,
        51..=100 => 0,
        101..=110 => 1,
        111..=129 => 2,
        _ => 3,
    };
    let rr = |v: f64| match round_int(v) {
        ..=8 => 2,
        9..=14 => 0,
        15..=20 => 1,
        21..=29 => 2,
        _ => 3,
    };
    let temp = |v: f64| match round_tenths(v) {
        ..=349 => 2,
        350..=384 => 0,
        _ => 2,
    };
    let avpu = |c: Acvpu| match c {
        Acvpu::Alert => 0,
        Acvpu::NewConfusion | Acvpu::Voice => 1,
        Acvpu::Pain => 2,
        Acvpu::Unresponsive => 3,
    };
    let items = [
        (Vital::SystolicBp, finite(input.systolic_bp).map(sbp)),
        (Vital::HeartRate, finite(input.heart_rate).map(hr)),
        (
            Vital::RespiratoryRate,
            finite(input.respiratory_rate).map(rr),
        ),
        (Vital::Temperature, finite(input.temperature_c).map(temp)),
        (Vital::Consciousness, input.consciousness.map(avpu)),
    ];
    let mut parameter_scores = Vec::new();
    let mut missing = Vec::new();
    for (v, s) in items {
        match s {
            Some(s) => parameter_scores.push((v, s)),
            None => missing.push(v),
        }
    }
    let total = parameter_scores.iter().map(|&(_, s)| s).sum();
    MewsResult {
        total,
        parameter_scores,
        missing,
        trigger: total >= 5,
    }
}

/// A qSOFA score (Sepsis-3): one point each for RR ≥ 22/min, altered mentation, SBP ≤ 100.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QsofaResult {
    /// Points (0–3; a lower bound when `missing` is not empty).
    pub score: u32,
    /// Criteria that could not be assessed.
    pub missing: Vec<Vital>,
    /// Score ≥ 2: higher risk of poor outcome.
    pub high_risk: bool,
}

/// qSOFA from respiratory rate, systolic BP and consciousness (anything but Alert counts
/// as altered mentation).
pub fn qsofa(
    respiratory_rate: Option<f64>,
    systolic_bp: Option<f64>,
    consciousness: Option<Acvpu>,
) -> QsofaResult {
    let mut score = 0;
    let mut missing = Vec::new();
    match finite(respiratory_rate) {
        Some(rr) => score += u32::from(round_int(rr) >= 22),
        None => missing.push(Vital::RespiratoryRate),
    }
    match finite(systolic_bp) {
        Some(sbp) => score += u32::from(round_int(sbp) <= 100),
        None => missing.push(Vital::SystolicBp),
    }
    match consciousness {
        Some(c) => score += u32::from(c != Acvpu::Alert),
        None => missing.push(Vital::Consciousness),
    }
    QsofaResult {
        score,
        missing,
        high_risk: score >= 2,
    }
}
