//! Synthetic remote-monitoring patients for `vigil demo` and benchmarks. Pure and
//! deterministic: the same seed gives the same cohort and the same readings.
//!
//! A [`Cohort`] is generated from a seed and a patient count. Every patient has a BP cuff,
//! a pulse oximeter and a thermometer; some a scale, a glucometer or a wearable. About 8%
//! follow a sepsis-like deterioration (heart rate, respiratory rate and temperature rising,
//! SpO2 and systolic BP falling over simulated hours, onset after
//! [`SimConfig::start_ms`]); one patient (from 3 patients up) has COPD with chronic
//! hypercapnic respiratory failure, on 2 L/min oxygen with a target SpO2 of 88–92%, scored
//! on NEWS2 Scale 2 — [`Cohort::condition_resource`] gives the Condition that
//! `vigil_scoring::spo2_scale_from_conditions` recognises.
//!
//! Readings are a pure function of (seed, patient, device, time slot): each device has a
//! fixed cadence, one reading per slot at a per-slot jittered time, so
//! [`Cohort::readings_between`] over adjacent ranges concatenates to the reading over
//! their union, whatever the range boundaries — the demo can poll as time passes.
//! Values follow the patient's baseline, a circadian rhythm (lower heart rate, blood
//! pressure and temperature at night), Gaussian noise, and the deterioration trajectory.

use serde_json::{json, Value};
use vigil_scoring::time::format_rfc3339_ms;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Device cadences and the simulation's start; all times are simulated epoch ms.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// When the simulation starts: deterioration onsets are after it, ages are as of it.
    pub start_ms: i64,
    /// Pulse oximeter interval (default 5 min).
    pub oximeter_interval_ms: i64,
    /// Wearable interval (default 2 min).
    pub wearable_interval_ms: i64,
    /// BP cuff interval (default 6 h; patients measure a few times a day).
    pub bp_interval_ms: i64,
    /// Thermometer interval (default 6 h).
    pub thermometer_interval_ms: i64,
    /// Scale interval (default 24 h).
    pub scale_interval_ms: i64,
    /// Glucometer interval (default 8 h).
    pub glucometer_interval_ms: i64,
    /// Fraction of patients with a sepsis-like deterioration (default 0.08; at least one
    /// in a cohort of 2 or more when positive).
    pub deterioration_fraction: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            // 2026-01-01T00:00:00Z.
            start_ms: 1_767_225_600_000,
            oximeter_interval_ms: 5 * MINUTE,
            wearable_interval_ms: 2 * MINUTE,
            bp_interval_ms: 6 * HOUR,
            thermometer_interval_ms: 6 * HOUR,
            scale_interval_ms: DAY,
            glucometer_interval_ms: 8 * HOUR,
            deterioration_fraction: 0.08,
        }
    }
}

/// A kind of home device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceKind {
    /// Blood-pressure cuff (systolic, diastolic, pulse).
    BpCuff,
    /// Pulse oximeter (SpO2, pulse, oxygen flow if on oxygen).
    PulseOximeter,
    /// Thermometer (°C).
    Thermometer,
    /// Weighing scale (kg).
    Scale,
    /// Glucometer (mg/dL).
    Glucometer,
    /// Wearable (heart rate, respiratory rate).
    Wearable,
}

impl DeviceKind {
    /// The payload's `type`: `bp-cuff`, `pulse-oximeter`, `thermometer`, `scale`,
    /// `glucometer`, `wearable`.
    pub fn type_name(self) -> &'static str {
        match self {
            DeviceKind::BpCuff => "bp-cuff",
            DeviceKind::PulseOximeter => "pulse-oximeter",
            DeviceKind::Thermometer => "thermometer",
            DeviceKind::Scale => "scale",
            DeviceKind::Glucometer => "glucometer",
            DeviceKind::Wearable => "wearable",
        }
    }

    fn salt(self) -> u64 {
        self as u64 + 1
    }
}

/// One device of a patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDevice {
    /// What it measures.
    pub kind: DeviceKind,
    /// Its position in [`SimPatient::devices`].
    pub index: usize,
    /// A stable serial-like identifier, e.g. `demo-0003-pulse-oximeter`.
    pub id: String,
}

/// What happens to a patient over the simulation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scenario {
    /// Stable around the baseline.
    Stable,
    /// Sepsis-like deterioration: from `onset_ms`, vitals move smoothly to severe values
    /// over `duration_ms`, then stay there.
    Sepsis {
        /// When the deterioration starts.
        onset_ms: i64,
        /// How long until it is at its worst.
        duration_ms: i64,
    },
    /// COPD with chronic hypercapnic respiratory failure: on oxygen, SpO2 target 88–92%
    /// (NEWS2 Scale 2), otherwise stable.
    CopdScale2,
}

/// A simulated patient.
#[derive(Debug, Clone, PartialEq)]
pub struct SimPatient {
    /// Position in the cohort.
    pub index: usize,
    /// Identifier value in the `urn:vigil:demo` system, e.g. `demo-0003`.
    pub identifier: String,
    /// Family name.
    pub family: String,
    /// Given name.
    pub given: String,
    /// FHIR administrative gender: `female` or `male`.
    pub gender: &'static str,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    /// The patient's course.
    pub scenario: Scenario,
    /// Devices; every patient has a BP cuff, oximeter and thermometer first.
    pub devices: Vec<SimDevice>,
    /// Supplemental oxygen flow, L/min (0 on air).
    pub oxygen_flow: f64,
    baseline: Baseline,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Baseline {
    hr: f64,
    rr: f64,
    spo2: f64,
    sbp: f64,
    dbp: f64,
    temp: f64,
    weight: f64,
    glucose: f64,
}

/// A device reading: the payload a device would send.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReading {
    /// The device's kind.
    pub device_kind: DeviceKind,
    /// The device's position in [`SimPatient::devices`].
    pub device_index: usize,
    /// When it was measured (simulated epoch ms, whole seconds).
    pub time_ms: i64,
    /// The payload body, e.g. `{"type":"pulse-oximeter","spo2":97,"pulseRate":72,"measuredAt":"…Z"}`.
    pub body: Value,
}

/// A generated cohort.
#[derive(Debug, Clone, PartialEq)]
pub struct Cohort {
    /// The seed it was generated from.
    pub seed: u64,
    /// The configuration.
    pub config: SimConfig,
    /// The patients.
    pub patients: Vec<SimPatient>,
}

/// SplitMix64 step: a fast, well-mixed 64-bit permutation (Steele et al. 2014).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small seedable PRNG (SplitMix64) for generating the cohort.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform index below `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

const GIVEN_F: [&str; 20] = [
    "Margaret", "Susan", "Linda", "Patricia", "Aisha", "Mei", "Olga", "Grace", "Fatima", "Helen",
    "Maria", "Ingrid", "Priya", "Joan", "Ruth", "Sofia", "Yuki", "Amara", "Carmen", "Eileen",
];
const GIVEN_M: [&str; 20] = [
    "John", "Robert", "David", "Ahmed", "Wei", "James", "Carlos", "Peter", "Ivan", "Kwame",
    "George", "Raj", "Thomas", "Hiroshi", "Samuel", "Luis", "Frank", "Omar", "Henrik", "Michael",
];
const FAMILY: [&str; 30] = [
    "Smith", "Okafor", "Nguyen", "Garcia", "Müller", "Kowalski", "Patel", "Johnson", "Rossi",
    "Haddad", "Kim", "Silva", "O'Brien", "Jensen", "Tanaka", "Brown", "Ivanova", "Mensah",
    "Dubois", "Cohen", "Singh", "Walker", "Novak", "Ortiz", "Larsen", "Chen", "Abebe", "Murphy",
    "Hughes", "Moreau",
];

/// Civil date of epoch ms (UTC) as `YYYY-MM-DD`.
fn date_of(ms: i64) -> String {
    format_rfc3339_ms(ms.div_euclid(DAY) * DAY)[..10].to_string()
}

impl Cohort {
    /// A cohort of `n_patients` from `seed`, with the default [`SimConfig`].
    pub fn generate(seed: u64, n_patients: usize) -> Cohort {
        Cohort::generate_with(seed, n_patients, SimConfig::default())
    }

    /// A cohort of `n_patients` from `seed` with the given configuration.
    pub fn generate_with(seed: u64, n_patients: usize, config: SimConfig) -> Cohort {
        let mut rng = Rng::new(mix(seed ^ 0x5EED_0FC0_4047));
        // Which patients deteriorate and which has COPD: a seeded shuffle.
        let mut order: Vec<usize> = (0..n_patients).collect();
        for i in (1..order.len()).rev() {
            let j = rng.below(i + 1);
            order.swap(i, j);
        }
        let copd = if n_patients >= 3 { order.pop() } else { None };
        let wanted = (n_patients as f64 * config.deterioration_fraction).round() as usize;
        let n_sepsis = if config.deterioration_fraction > 0.0 && n_patients >= 2 {
            wanted.max(1)
        } else {
            wanted
        }
        .min(order.len());
        let sepsis: Vec<usize> = order[..n_sepsis].to_vec();

        let patients = (0..n_patients)
            .map(|i| {
                let mut rng = Rng::new(mix(seed ^ mix(i as u64 + 1)));
                let female = rng.unit() < 0.5;
                let given = if female {
                    GIVEN_F[rng.below(GIVEN_F.len())]
                } else {
                    GIVEN_M[rng.below(GIVEN_M.len())]
                };
                let family = FAMILY[rng.below(FAMILY.len())];
                let age_days = rng.range(45.0 * 365.25, 90.0 * 365.25) as i64;
                let birth_date = date_of(config.start_ms - age_days * DAY);
                let scenario = if Some(i) == copd {
                    Scenario::CopdScale2
                } else if sepsis.contains(&i) {
                    Scenario::Sepsis {
                        onset_ms: config.start_ms + rng.range(1.0, 4.0) as i64 * HOUR,
                        duration_ms: rng.range(6.0, 10.0) as i64 * HOUR,
                    }
                } else {
                    Scenario::Stable
                };
                let copd_patient = scenario == Scenario::CopdScale2;
                let baseline = Baseline {
                    hr: rng.range(62.0, 82.0),
                    rr: if copd_patient {
                        rng.range(17.0, 20.0)
                    } else {
                        rng.range(13.0, 17.0)
                    },
                    spo2: if copd_patient {
                        rng.range(89.5, 91.0)
                    } else {
                        rng.range(96.5, 98.5)
                    },
                    sbp: rng.range(115.0, 142.0),
                    dbp: rng.range(68.0, 86.0),
                    temp: rng.range(36.4, 37.0),
                    weight: rng.range(if female { 50.0 } else { 62.0 }, 105.0),
                    glucose: rng.range(95.0, 150.0),
                };
                let mut kinds = vec![
                    DeviceKind::BpCuff,
                    DeviceKind::PulseOximeter,
                    DeviceKind::Thermometer,
                ];
                if rng.unit() < 0.4 {
                    kinds.push(DeviceKind::Scale);
                }
                if rng.unit() < 0.3 {
                    kinds.push(DeviceKind::Glucometer);
                }
                let wearable = rng.unit() < 0.35;
                if wearable || matches!(scenario, Scenario::Sepsis { .. }) || copd_patient {
                    kinds.push(DeviceKind::Wearable);
                }
                let identifier = format!("demo-{:04}", i + 1);
                let devices = kinds
                    .into_iter()
                    .enumerate()
                    .map(|(index, kind)| SimDevice {
                        kind,
                        index,
                        id: format!("{identifier}-{}", kind.type_name()),
                    })
                    .collect();
                SimPatient {
                    index: i,
                    identifier,
                    family: family.to_string(),
                    given: given.to_string(),
                    gender: if female { "female" } else { "male" },
                    birth_date,
                    scenario,
                    devices,
                    oxygen_flow: if copd_patient { 2.0 } else { 0.0 },
                    baseline,
                }
            })
            .collect();
        Cohort {
            seed,
            config,
            patients,
        }
    }

    fn interval(&self, kind: DeviceKind) -> i64 {
        let c = &self.config;
        let ms = match kind {
            DeviceKind::BpCuff => c.bp_interval_ms,
            DeviceKind::PulseOximeter => c.oximeter_interval_ms,
            DeviceKind::Thermometer => c.thermometer_interval_ms,
            DeviceKind::Scale => c.scale_interval_ms,
            DeviceKind::Glucometer => c.glucometer_interval_ms,
            DeviceKind::Wearable => c.wearable_interval_ms,
        };
        // A zero or negative cadence would loop forever; a second is the finest.
        ms.max(1000)
    }

    /// Device readings of `patient` (one of [`Cohort::patients`]) measured in
    /// `[from_ms, to_ms)`, ordered by time (then device). Empty for an empty range.
    pub fn readings_between(
        &self,
        patient: &SimPatient,
        from_ms: i64,
        to_ms: i64,
    ) -> Vec<DeviceReading> {
        let p = patient;
        let mut out = Vec::new();
        if to_ms <= from_ms {
            return out;
        }
        for d in &p.devices {
            let interval = self.interval(d.kind);
            let first_slot = from_ms.div_euclid(interval) - 1;
            let last_slot = to_ms.div_euclid(interval);
            for slot in first_slot..=last_slot {
                let key = self.slot_key(p, d, slot);
                // Jitter within the first half of the slot, whole seconds.
                let jitter_s = (mix(key ^ 0x7177) % ((interval / 2000).max(1) as u64)) as i64;
                let t = slot * interval + jitter_s * 1000;
                if t < from_ms || t >= to_ms {
                    continue;
                }
                out.push(DeviceReading {
                    device_kind: d.kind,
                    device_index: d.index,
                    time_ms: t,
                    body: self.body(p, d.kind, t, key),
                });
            }
        }
        out.sort_by_key(|r| (r.time_ms, r.device_index));
        out
    }

    fn slot_key(&self, p: &SimPatient, d: &SimDevice, slot: i64) -> u64 {
        mix(mix(self.seed ^ mix(p.index as u64 + 1)) ^ mix(d.kind.salt()) ^ slot as u64)
    }

    /// Severity of the deterioration at `t`, 0 (none) to 1 (worst); smoothstep ramp.
    pub fn severity(&self, patient: &SimPatient, t: i64) -> f64 {
        match patient.scenario {
            Scenario::Sepsis {
                onset_ms,
                duration_ms,
            } => {
                let x = ((t - onset_ms) as f64 / duration_ms.max(1) as f64).clamp(0.0, 1.0);
                x * x * (3.0 - 2.0 * x)
            }
            Scenario::Stable | Scenario::CopdScale2 => 0.0,
        }
    }

    fn body(&self, p: &SimPatient, kind: DeviceKind, t: i64, key: u64) -> Value {
        let mut rng = Rng::new(key);
        let b = &p.baseline;
        let s = self.severity(p, t);
        // Circadian phase: trough around 04:00 UTC, peak around 16:00.
        let phase =
            2.0 * std::f64::consts::PI * ((t.rem_euclid(DAY) as f64 / DAY as f64) - 10.0 / 24.0);
        let circ = phase.sin();
        let hr = b.hr + 5.0 * circ + 45.0 * s + 3.0 * rng.normal();
        let rr = b.rr + 0.8 * circ + 14.0 * s + 1.0 * rng.normal();
        let spo2 = b.spo2 - 8.5 * s + 0.8 * rng.normal();
        let sbp = b.sbp + 7.0 * circ - 42.0 * s + 5.0 * rng.normal();
        let dbp = b.dbp + 4.0 * circ - 20.0 * s + 3.5 * rng.normal();
        let temp = b.temp + 0.25 * circ + 2.5 * s + 0.12 * rng.normal();
        let at = format_rfc3339_ms(t);
        let int = |x: f64, lo: f64, hi: f64| x.round().clamp(lo, hi) as i64;
        let tenth = |x: f64| (x * 10.0).round() / 10.0;
        match kind {
            DeviceKind::PulseOximeter => {
                // The oximeter reports the concentrator's flow, 0 on room air, so NEWS2
                // knows "air or oxygen" instead of leaving it unscored. Whole litres
                // are what home concentrators are set to.
                json!({
                    "type": kind.type_name(),
                    "spo2": int(spo2, 70.0, 100.0),
                    "pulseRate": int(hr, 30.0, 220.0),
                    "oxygenFlow": p.oxygen_flow.round() as i64,
                    "measuredAt": at,
                })
            }
            DeviceKind::BpCuff => json!({
                "type": kind.type_name(),
                "systolic": int(sbp, 60.0, 250.0),
                "diastolic": int(dbp.min(sbp - 15.0), 30.0, 150.0),
                "pulseRate": int(hr, 30.0, 220.0),
                "measuredAt": at,
            }),
            DeviceKind::Thermometer => json!({
                "type": kind.type_name(),
                "temperature": tenth(temp.clamp(33.0, 42.5)),
                "measuredAt": at,
            }),
            DeviceKind::Scale => json!({
                "type": kind.type_name(),
                "weight": tenth(b.weight + 0.3 * rng.normal()),
                "measuredAt": at,
            }),
            DeviceKind::Glucometer => json!({
                "type": kind.type_name(),
                "glucose": int(b.glucose + 25.0 * s + 12.0 * rng.normal(), 40.0, 500.0),
                "measuredAt": at,
            }),
            DeviceKind::Wearable => json!({
                "type": kind.type_name(),
                "heartRate": int(hr, 30.0, 220.0),
                "respiratoryRate": int(rr, 6.0, 50.0),
                "measuredAt": at,
            }),
        }
    }

    /// The FHIR Patient of `patient`: identifier `urn:vigil:demo|demo-NNNN`, name, gender,
    /// birth date (no `id`: the server assigns it).
    pub fn patient_resource(&self, patient: &SimPatient) -> Value {
        let p = patient;
        json!({
            "resourceType": "Patient",
            "identifier": [{ "system": "urn:vigil:demo", "value": p.identifier }],
            "active": true,
            "name": [{ "use": "official", "family": p.family, "given": [p.given] }],
            "gender": p.gender,
            "birthDate": p.birth_date,
        })
    }

    /// For the COPD patient, the Condition that puts them on NEWS2 SpO2 Scale 2 (SNOMED
    /// 426896000 chronic hypercapnic respiratory failure, ICD-10-CM J96.12), with
    /// `subject` = `patient_ref` (e.g. `"Patient/123"`); `None` for everyone else.
    pub fn condition_resource(&self, patient: &SimPatient, patient_ref: &str) -> Option<Value> {
        let p = patient;
        if p.scenario != Scenario::CopdScale2 {
            return None;
        }
        Some(json!({
            "resourceType": "Condition",
            "identifier": [{ "system": "urn:vigil:demo", "value": format!("{}-copd", p.identifier) }],
            "clinicalStatus": { "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active"
            }]},
            "verificationStatus": { "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                "code": "confirmed"
            }]},
            "category": [{ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                "code": "problem-list-item"
            }]}],
            "code": {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "426896000",
                        "display": "Chronic hypercapnic respiratory failure"
                    },
                    {
                        "system": "http://hl7.org/fhir/sid/icd-10-cm",
                        "code": "J96.12",
                        "display": "Chronic respiratory failure with hypercapnia"
                    }
                ],
                "text": "COPD with chronic hypercapnic respiratory failure (target SpO2 88-92%, NEWS2 Scale 2)"
            },
            "subject": { "reference": patient_ref },
            "onsetDateTime": format_rfc3339_ms(self.config.start_ms - 3 * 365 * DAY),
        }))
    }
}
