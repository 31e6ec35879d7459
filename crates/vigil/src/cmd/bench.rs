//! `vigil bench fhir`: the FHIR server benchmark of issue 3.
//!
//! Runs the real server (the same `FhirApi` as `vigil serve`) in-process on 127.0.0.1:0
//! over the embedded store of a data directory and drives it over HTTP with N client
//! threads:
//!
//! 1. single-resource creates (`POST Observation`), and the same through the store
//!    directly (no HTTP, no validation);
//! 2. transaction Bundles of 100 and of 1,000 Observations;
//! 3. loading (transactions of 1,000) until the store holds the target number of
//!    Observations, then the latency of two searches over random patients:
//!    `Observation?subject=…&code=…&date=ge…&_sort=-date&_count=50` and `Patient?name=…`.
//!
//! Steps 1 and 2 write into the same store, and count towards the target. A data
//! directory given with `--data-dir` is kept, so a later run with a larger target only
//! loads the difference. `--postgres URL` measures the same on PostgreSQL (a build with
//! the `postgres` feature), in the schema `--postgres-schema` (also kept).
//!
//! The timed creates and Bundles are serialized before the clock starts and their
//! answers are checked without being parsed, so the clients (which share the machine's
//! cores with the server) cost as little as they can; the CPU time per resource of the
//! whole process, and of the store's writer thread, are reported beside the rates.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_auth::{ScopeSet, SigningKey, TokenRequest};
use vigil_server::{axum, tokio, FhirApi, FhirServerConfig};
use vigil_store::{FhirStore, SqliteStore};

/// `vigil bench …`
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// FHIR server throughput and search latency (embedded store, over HTTP).
    Fhir(FhirArgs),
    /// Device readings through ingest to the deterioration Flag: latency and sustained rate.
    Pipeline(super::bench_pipeline::PipelineArgs),
    /// Readings from the ingest log into the store as hourly SampledData Observations.
    Normalize(super::bench_normalize::NormalizeArgs),
}

/// `vigil bench fhir` options.
#[derive(clap::Args)]
pub struct FhirArgs {
    /// Data directory (kept; re-runs load only the missing Observations). Default: a
    /// temporary directory, removed at the end.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Observations the store must hold before the searches are measured.
    #[arg(long, default_value_t = 100_000)]
    observations: usize,
    /// Patients (default: one per 100 Observations, at least 10).
    #[arg(long)]
    patients: Option<usize>,
    /// Concurrent HTTP clients for the write measurements and loading.
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// Single-resource creates measured (over HTTP, and again through the store).
    #[arg(long, default_value_t = 10_000)]
    creates: usize,
    /// Resources written per Bundle size measured (Bundles of 100 and of 1,000).
    #[arg(long, default_value_t = 40_000)]
    bundle_resources: usize,
    /// Queries per search measured.
    #[arg(long, default_value_t = 1_000)]
    queries: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run against PostgreSQL at this URL instead of the embedded store (needs a build
    /// with the `postgres` feature). The data goes into `--postgres-schema`, which is
    /// kept like `--data-dir`.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// The PostgreSQL schema for `--postgres`.
    #[arg(long, default_value = "vigil_bench")]
    postgres_schema: String,
}

/// The store measured, with what only its backend can do.
struct BenchStore {
    store: Arc<dyn FhirStore>,
    sqlite: Option<Arc<SqliteStore>>,
    /// Update planner statistics after loading (PostgreSQL's `ANALYZE`).
    analyze: Box<dyn Fn() -> Result<()> + Sync>,
    name: &'static str,
}

fn open_bench_store(args: &FhirArgs, fhir_dir: &Path) -> Result<BenchStore> {
    if let Some(url) = &args.postgres {
        return open_postgres_bench(url, &args.postgres_schema);
    }
    let store = Arc::new(
        SqliteStore::open(&fhir_dir.join("store.db"))
            .with_context(|| format!("opening the store in {}", fhir_dir.display()))?,
    );
    Ok(BenchStore {
        store: store.clone(),
        sqlite: Some(store),
        analyze: Box::new(|| Ok(())),
        name: "sqlite",
    })
}

#[cfg(feature = "postgres")]
fn open_postgres_bench(url: &str, schema: &str) -> Result<BenchStore> {
    use vigil_store_postgres::{PgOptions, PostgresStore};
    // Never echo the URL: it may carry a password.
    let store = Arc::new(
        PostgresStore::connect(url, PgOptions::with_schema(schema))
            .with_context(|| format!("opening PostgreSQL (schema {schema})"))?,
    );
    let analyzed = store.clone();
    Ok(BenchStore {
        store,
        sqlite: None,
        analyze: Box::new(move || analyzed.analyze().context("ANALYZE")),
        name: "postgresql",
    })
}

#[cfg(not(feature = "postgres"))]
fn open_postgres_bench(_url: &str, _schema: &str) -> Result<BenchStore> {
    bail!(
        "--postgres: this vigil was built without PostgreSQL support; run it with \
         `cargo run --release -p vigil --features postgres -- bench fhir --postgres URL`"
    )
}

/// Run `vigil bench`.
pub fn run(args: Args) -> ExitCode {
    let args = match args.what {
        What::Fhir(args) => args,
        What::Pipeline(args) => return super::bench_pipeline::run(args),
        What::Normalize(args) => return super::bench_normalize::run(args),
    };
    match bench_fhir(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The vital signs generated: LOINC code, display, UCUM unit, low, high.
const VITALS: &[(&str, &str, &str, f64, f64)] = &[
    ("8867-4", "Heart rate", "/min", 48.0, 125.0),
    ("9279-1", "Respiratory rate", "/min", 10.0, 28.0),
    (
        "59408-5",
        "Oxygen saturation in Arterial blood by Pulse oximetry",
        "%",
        88.0,
        100.0,
    ),
    ("8310-5", "Body temperature", "Cel", 35.5, 39.5),
    ("29463-7", "Body weight", "kg", 45.0, 130.0),
];
const FAMILIES: &[&str] = &[
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
    "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall",
    "Wood", "Jackson", "Clarke", "Nguyen", "Okafor", "Müller", "García", "Kowalski", "Ivanova",
    "Haddad", "Kim", "Sato", "Rossi", "Novak", "Andersen", "Silva", "Cohen", "Murphy",
];
const GIVEN: &[&str] = &[
    "Ada", "Ben", "Chloe", "Dev", "Erin", "Farid", "Grace", "Hugo", "Ines", "Jon", "Kemi", "Liam",
    "Maya", "Noor", "Oscar", "Priya", "Quinn", "Rosa", "Sami", "Tara",
];
/// Readings start here (2024-01-01T00:00:00Z) and come every 4 hours per patient.
const T0_SECS: i64 = 1_704_067_200;
const READING_INTERVAL_SECS: i64 = 4 * 3600;

/// A small deterministic generator (SplitMix64): the data set is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn patient_id(p: usize) -> String {
    format!("bench-p{p}")
}

/// Patients sharing each family name.
const PER_FAMILY: usize = 8;

fn family(p: usize, patients: usize) -> String {
    // Names repeat (a name search matches about PER_FAMILY patients) with a numeric
    // suffix, so a search is not answered by thousands however many patients there are.
    let groups = (patients / (FAMILIES.len() * PER_FAMILY)).max(1);
    format!(
        "{}{}",
        FAMILIES[p % FAMILIES.len()],
        (p / FAMILIES.len()) % groups
    )
}

fn patient(p: usize, patients: usize) -> Value {
    json!({
        "resourceType": "Patient",
        "id": patient_id(p),
        "identifier": [{"system": "urn:vigil:bench:mrn", "value": format!("MRN{p:08}")}],
        "active": true,
        "name": [{"use": "official", "family": family(p, patients),
                  "given": [GIVEN[p % GIVEN.len()]]}],
        "gender": if p.is_multiple_of(2) { "female" } else { "male" },
        "birthDate": format!("{}-{:02}-{:02}", 1930 + p % 70, 1 + p % 12, 1 + p % 28),
    })
}

fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The `i`-th Observation of the data set: patient `i % patients`, reading number
/// `i / patients` of that patient (codes in turn, every 4 hours).
fn observation(i: usize, patients: usize) -> Value {
    let p = i % patients;
    let k = i / patients;
    let (code, display, unit, lo, hi) = VITALS[k % VITALS.len()];
    let mut rng = Rng(i as u64);
    let value = ((lo + (hi - lo) * rng.unit()) * 10.0).round() / 10.0;
    let when = T0_SECS + k as i64 * READING_INTERVAL_SECS + rng.below(600) as i64;
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}],
                 "text": display},
        "subject": {"reference": format!("Patient/{}", patient_id(p))},
        "effectiveDateTime": rfc3339(when),
        "valueQuantity": {"value": value, "unit": unit,
                          "system": "http://unitsofmeasure.org", "code": unit},
    })
}

fn transaction(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

fn post_entry(resource: Value) -> Value {
    json!({"resource": resource, "request": {"method": "POST", "url": "Observation"}})
}

/// One HTTP client of the benchmark.
#[derive(Clone)]
struct Client {
    agent: ureq::Agent,
    base: String,
    auth: String,
}

impl Client {
    fn new(base: &str, token: &str) -> Client {
        Client {
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(120))
                .build(),
            base: base.to_string(),
            auth: format!("Bearer {token}"),
        }
    }

    /// Send a request; a non-2xx answer is an error with the server's message.
    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let body = body.map(Value::to_string);
        let text = self.send_text(method, path, body.as_deref(), None)?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).context("the response is not JSON")
    }

    /// Send a request with a body already serialized and return the answer's text
    /// unparsed (the timed loops keep the load generator's own work small, as it shares
    /// the machine with the server).
    fn send_text(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        prefer: Option<&str>,
    ) -> Result<String> {
        self.request(method, path, body, prefer)?
            .into_string()
            .context("reading the response")
    }

    /// Send a request; a non-2xx answer is an error with the server's message.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        prefer: Option<&str>,
    ) -> Result<ureq::Response> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .agent
            .request(method, &url)
            .set("Authorization", &self.auth)
            .set("Accept", "application/fhir+json");
        if let Some(prefer) = prefer {
            req = req.set("Prefer", prefer);
        }
        let result = match body {
            Some(b) => req
                .set("Content-Type", "application/fhir+json")
                .send_string(b),
            None => req.call(),
        };
        match result {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                bail!("{method} {path}: HTTP {code}: {}", truncate(&text, 600))
            }
            Err(e) => Err(anyhow!("{method} {path}: {e}")),
        }
    }

    /// Post a serialized body and hand its answer (status and bytes) to `check`. The
    /// answer is read into a buffer the thread keeps: an answer with the resources is
    /// ~1.5 KB per Bundle entry, and a fresh, growing String for each cost the load
    /// generator, which shares the two cores with the server, a tenth of the run's CPU.
    fn post_checked(
        &self,
        path: &str,
        body: &str,
        prefer: Option<&str>,
        check: impl FnOnce(u16, &[u8]) -> Result<()>,
    ) -> Result<()> {
        thread_local! {
            static ANSWER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let resp = self.request("POST", path, Some(body), prefer)?;
        let status = resp.status();
        ANSWER.with_borrow_mut(|answer| {
            answer.clear();
            std::io::Read::read_to_end(&mut resp.into_reader(), answer)
                .context("reading the response")?;
            check(status, answer)
        })
    }

    /// Post a serialized transaction of `size` creates and check that its response
    /// reports `size` of them created (with the resources, or without them when
    /// `minimal`: `Prefer: return=minimal`), without parsing it.
    fn post_transaction(&self, body: &str, size: usize, minimal: bool) -> Result<()> {
        let prefer = minimal.then_some("return=minimal");
        self.post_checked("", body, prefer, |_, answer| {
            let created = memchr::memmem::find_iter(answer, b"\"201 Created\"").count();
            if created != size {
                bail!(
                    "a transaction of {size} creates answered {created} created: {}",
                    truncate(&String::from_utf8_lossy(answer), 600)
                );
            }
            Ok(())
        })
    }

    /// Post a serialized resource and check that it was created (201), without parsing
    /// the answer.
    fn post_create(&self, path: &str, body: &str) -> Result<()> {
        self.post_checked(path, body, None, |status, answer| {
            if status != 201 {
                bail!(
                    "POST {path} answered {status}, not 201: {}",
                    truncate(&String::from_utf8_lossy(answer), 600)
                );
            }
            Ok(())
        })
    }
}

/// Transactions of `size` Observation creates, numbered from `first`, serialized.
fn transaction_bodies(first: usize, bundles: usize, size: usize, patients: usize) -> Vec<String> {
    (0..bundles)
        .map(|b| {
            let entries = (0..size)
                .map(|j| post_entry(observation(first + b * size + j, patients)))
                .collect();
            transaction(entries).to_string()
        })
        .collect()
}

/// CPU time used so far by the store's writer thread (`vigil-store-writer`), whose work
/// is serial: it bounds the write rate. Linux only, like [`process_cpu`].
fn writer_cpu() -> Option<Duration> {
    let mut total = None;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, cpu)) = stat_cpu(&stat) {
            if name.contains("vigil-store-wri") {
                *total.get_or_insert(Duration::ZERO) += cpu;
            }
        }
    }
    total
}

/// CPU time (user + system) this process has used so far, where the OS tells it
/// (Linux: /proc/self/stat, in clock ticks of 10 ms).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    stat_cpu(&stat).map(|(_, cpu)| cpu)
}

/// The command name and the user + system CPU time of a `/proc/.../stat` line.
fn stat_cpu(stat: &str) -> Option<(&str, Duration)> {
    // Fields after the command name (which may hold spaces) start after its ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((head, Duration::from_millis((utime + stime) * 10)))
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Run `work(client_index, item)` for items `0..total` on `threads` threads (items
/// handed out in order), returning the elapsed time. The first error stops the run.
fn parallel(
    threads: usize,
    total: usize,
    work: impl Fn(usize, usize) -> Result<()> + Sync,
) -> Result<Duration> {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let failed = std::sync::Mutex::new(None::<anyhow::Error>);
    std::thread::scope(|s| {
        for t in 0..threads.max(1) {
            let (next, failed, work) = (&next, &failed, &work);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if let Err(e) = work(t, i) {
                    // Stop the others: no more items are handed out.
                    next.store(total, Ordering::Relaxed);
                    let mut f = failed.lock().unwrap_or_else(|p| p.into_inner());
                    f.get_or_insert(e);
                    break;
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(start.elapsed()),
    }
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// The `p`-quantile (0..1) of sorted values: the smallest value at or above that share.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Progress on stderr, at most every 2 seconds.
struct Progress {
    what: &'static str,
    target: usize,
    start: Instant,
    last: std::sync::Mutex<Instant>,
}

impl Progress {
    fn new(what: &'static str, target: usize) -> Progress {
        let now = Instant::now();
        Progress {
            what,
            target,
            start: now,
            last: std::sync::Mutex::new(now),
        }
    }

    fn update(&self, done: usize) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= Duration::from_secs(2) || done >= self.target {
            *last = Instant::now();
            let rate = per_sec(done, self.start.elapsed());
            let eta = (self.target.saturating_sub(done)) as f64 / rate.max(1e-9);
            eprint!(
                "\r  {}: {done}/{} ({rate:.0}/s, ~{eta:.0} s left)   ",
                self.what, self.target
            );
            if done >= self.target {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        }
    }
}

/// Everything measured, for the table and `--json`.
#[derive(Default)]
struct Results {
    rows: Vec<(String, f64, String)>,
    json: serde_json::Map<String, Value>,
}

impl Results {
    fn add(&mut self, key: &str, label: String, value: f64, unit: &str) {
        eprintln!("  {label}: {value:.2} {unit}");
        self.rows.push((label, value, unit.to_string()));
        self.json.insert(key.to_string(), json!(value));
    }
}

/// Removes a temporary data directory at the end.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn bench_fhir(args: FhirArgs) -> Result<()> {
    if args.threads == 0 || args.queries == 0 {
        bail!("--threads and --queries must be at least 1");
    }
    let patients = args.patients.unwrap_or(args.observations / 100).max(10);
    let (data_dir, _cleanup) = match &args.data_dir {
        Some(d) => (d.clone(), TempDir(None)),
        None => {
            let d = std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id()));
            (d.clone(), TempDir(Some(d)))
        }
    };
    let fhir_dir = data_dir.join("fhir");
    std::fs::create_dir_all(&fhir_dir)
        .with_context(|| format!("creating {}", fhir_dir.display()))?;
    let mut backend = open_bench_store(&args, &fhir_dir)?;
    let store = backend.store.clone();
    let key = Arc::new(SigningKey::load_or_create(&data_dir)?);
    let token = key.issue(
        &TokenRequest::new("vigil-bench", ScopeSet::parse("system/*.cruds")?)
            .ttl(Duration::from_secs(24 * 3600)),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .context("listening on 127.0.0.1")?;
    let base = format!("http://{}/fhir", listener.local_addr()?);
    let mut config = FhirServerConfig::new(&base);
    config.export_dir = data_dir.join("export");
    config.audit_file = Some(data_dir.join("audit.jsonl"));
    let api = FhirApi::try_new(store.clone(), key, config)?;
    let app = axum::Router::new().merge(api.mount("/fhir"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(vigil_server::serve(listener, app, async move {
        let _ = stopped.await;
    }));
    eprintln!(
        "vigil bench fhir: {} ({}; data in {}), {} client threads",
        base,
        backend.name,
        data_dir.display(),
        args.threads
    );
    let outcome = measure(&args, patients, &base, &token, &backend);
    let _ = stop.send(());
    runtime
        .block_on(server)
        .context("the server task failed")?
        .context("the server failed")?;
    drop(runtime);
    drop(api);
    drop(store);
    if let Some(sqlite) = backend.sqlite.take() {
        if let Ok(sqlite) = Arc::try_unwrap(sqlite) {
            sqlite.close().context("closing the store")?;
        }
    }
    let results = outcome?;
    print_table(&results);
    if let Some(path) = &args.json {
        let mut json = results.json;
        json.insert("backend".into(), json!(backend.name));
        json.insert("threads".into(), json!(args.threads));
        json.insert("patients".into(), json!(patients));
        write_json(path, &Value::Object(json))?;
    }
    Ok(())
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn print_table(r: &Results) {
    let width = r.rows.iter().map(|(l, _, _)| l.len()).max().unwrap_or(10);
    println!("{:width$}  {:>12}  unit", "measurement", "value");
    for (label, value, unit) in &r.rows {
        println!("{label:width$}  {value:>12.2}  {unit}");
    }
}

fn count(client: &Client, resource_type: &str) -> Result<usize> {
    let r = client.send("GET", &format!("/{resource_type}?_summary=count"), None)?;
    r["total"]
        .as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| anyhow!("no total in the count of {resource_type}"))
}

fn measure(
    args: &FhirArgs,
    patients: usize,
    base: &str,
    token: &str,
    backend: &BenchStore,
) -> Result<Results> {
    let store = backend.store.as_ref();
    let mut results = Results::default();
    let clients: Vec<Client> = (0..args.threads)
        .map(|_| Client::new(base, token))
        .collect();
    let threads = args.threads;

    // Patients: PUT with fixed ids, so re-runs update instead of duplicating.
    eprintln!("patients: {patients}");
    let progress = Progress::new("patients", patients);
    let done = AtomicUsize::new(0);
    let chunks = patients.div_ceil(1000);
    parallel(threads.min(4), chunks, |t, c| {
        let end = ((c + 1) * 1000).min(patients);
        let entries = (c * 1000..end)
            .map(|p| {
                json!({"resource": patient(p, patients),
                       "request": {"method": "PUT", "url": format!("Patient/{}", patient_id(p))}})
            })
            .collect();
        clients[t].send("POST", "", Some(&transaction(entries)))?;
        let n = end - c * 1000;
        progress.update(done.fetch_add(n, Ordering::Relaxed) + n);
        Ok(())
    })?;
    let mut next_obs = count(&clients[0], "Observation")?;
    eprintln!("observations already stored: {next_obs}");

    // (a) single creates over HTTP, then through the store.
    let n = args.creates;
    if n > 0 {
        eprintln!("single-resource creates: {n} over HTTP, {n} through the store");
        let first = next_obs;
        // Serialized before the clock starts, answers checked unparsed (as for Bundles).
        let bodies: Vec<String> = (0..n)
            .map(|i| observation(first + i, patients).to_string())
            .collect();
        let d = parallel(threads, n, |t, i| {
            clients[t].post_create("/Observation", &bodies[i])
        })?;
        drop(bodies);
        next_obs += n;
        results.add(
            "creates_http_per_s",
            format!("creates/s over HTTP ({threads} clients)"),
            per_sec(n, d),
            "/s",
        );
        let first = next_obs;
        let d = parallel(threads, n, |_, i| {
            store.create(observation(first + i, patients))?;
            Ok(())
        })?;
        next_obs += n;
        results.add(
            "creates_store_per_s",
            format!("creates/s through the store ({threads} threads)"),
            per_sec(n, d),
            "/s",
        );
    }

    // (b) transaction Bundles.
    // Answered with every resource (the default), then with `Prefer: return=minimal`
    // (status, location, ETag only: what bulk loaders ask for).
    for (size, minimal) in [(100usize, false), (1000, false), (100, true), (1000, true)] {
        let bundles = args.bundle_resources.div_ceil(size);
        if bundles == 0 {
            continue;
        }
        let (key, how) = if minimal {
            (format!("bundle_{size}_minimal"), ", Prefer: return=minimal")
        } else {
            (format!("bundle_{size}"), "")
        };
        eprintln!("transaction Bundles of {size}{how}: {bundles}");
        let bodies = transaction_bodies(next_obs, bundles, size, patients);
        let cpu_before = process_cpu();
        let writer_before = writer_cpu();
        let d = parallel(threads, bundles, |t, b| {
            clients[t].post_transaction(&bodies[b], size, minimal)
        })?;
        let cpu = process_cpu()
            .zip(cpu_before)
            .map(|(a, b)| a.saturating_sub(b));
        let writer = writer_cpu()
            .zip(writer_before)
            .map(|(a, b)| a.saturating_sub(b));
        next_obs += bundles * size;
        results.add(
            &format!("{key}_resources_per_s"),
            format!("resources/s in transactions of {size}{how} ({threads} clients)"),
            per_sec(bundles * size, d),
            "/s",
        );
        if let Some(cpu) = cpu {
            results.add(
                &format!("{key}_cpu_us_per_resource"),
                "  CPU per resource in this process".to_string(),
                cpu.as_secs_f64() * 1e6 / (bundles * size) as f64,
                "µs",
            );
        }
        if let Some(writer) = writer {
            results.add(
                &format!("{key}_writer_cpu_us_per_resource"),
                "  of which the store's writer thread".to_string(),
                writer.as_secs_f64() * 1e6 / (bundles * size) as f64,
                "µs",
            );
        }
    }

    // (c) load to the target, then search latency.
    let missing = args.observations.saturating_sub(next_obs);
    if missing > 0 {
        eprintln!("loading {missing} Observations in transactions of 1,000");
        let progress = Progress::new("observations", missing);
        let done = AtomicUsize::new(0);
        let first = next_obs;
        let d = parallel(threads, missing.div_ceil(1000), |t, b| {
            let end = ((b + 1) * 1000).min(missing);
            let entries = (b * 1000..end)
                .map(|j| post_entry(observation(first + j, patients)))
                .collect();
            clients[t].post_transaction(&transaction(entries).to_string(), end - b * 1000, true)?;
            progress.update(done.fetch_add(end - b * 1000, Ordering::Relaxed) + end - b * 1000);
            Ok(())
        })?;
        results.add(
            "load_resources_per_s",
            format!("loading: resources/s in transactions of 1,000 ({threads} clients)"),
            per_sec(missing, d),
            "/s",
        );
    }
    (backend.analyze)()?;
    let stored = count(&clients[0], "Observation")?;
    results
        .json
        .insert("observations_stored".into(), json!(stored));
    eprintln!(
        "searching with {stored} Observations stored ({} queries each)",
        args.queries
    );
    // Readings reach this far per patient; search the most recent ~week of them.
    let readings = stored / patients;
    let last = T0_SECS + readings as i64 * READING_INTERVAL_SECS;
    let since = rfc3339(last - 7 * 86_400);
    let since = &since[..10];
    let mut rng = Rng(0x5eed);
    let client = &clients[0];
    let mut obs_ms = Vec::with_capacity(args.queries);
    let mut obs_matches = 0usize;
    for _ in 0..args.queries {
        let p = rng.below(patients);
        let code = VITALS[rng.below(VITALS.len())].0;
        let path = format!(
            "/Observation?subject=Patient/{}&code=http://loinc.org|{code}&date=ge{since}\
             &_sort=-date&_count=50",
            patient_id(p)
        );
        let t = Instant::now();
        let r = client.send("GET", &path, None)?;
        obs_ms.push(t.elapsed().as_secs_f64() * 1e3);
        obs_matches += r["entry"].as_array().map_or(0, Vec::len);
    }
    let mut name_ms = Vec::with_capacity(args.queries);
    let mut name_matches = 0usize;
    for _ in 0..args.queries {
        let p = rng.below(patients);
        let path = format!("/Patient?name={}", family(p, patients));
        let t = Instant::now();
        let r = client.send("GET", &path, None)?;
        name_ms.push(t.elapsed().as_secs_f64() * 1e3);
        name_matches += r["entry"].as_array().map_or(0, Vec::len);
    }
    if obs_matches == 0 || name_matches == 0 {
        bail!("the searches found nothing: the data set is not what the benchmark expects");
    }
    obs_ms.sort_by(f64::total_cmp);
    name_ms.sort_by(f64::total_cmp);
    let q = args.queries as f64;
    eprintln!(
        "  (Observation search: {:.1} matches/query on average; Patient?name: {:.1})",
        obs_matches as f64 / q,
        name_matches as f64 / q
    );
    let label = |what: &str, p: &str| format!("{what} {p} ({stored} Observations)");
    let obs = "Observation?subject&code&date&_sort=-date&_count=50";
    results.add(
        "observation_search_p50_ms",
        label(obs, "p50"),
        quantile(&obs_ms, 0.5),
        "ms",
    );
    results.add(
        "observation_search_p99_ms",
        label(obs, "p99"),
        quantile(&obs_ms, 0.99),
        "ms",
    );
    results.add(
        "patient_name_p50_ms",
        label("Patient?name", "p50"),
        quantile(&name_ms, 0.5),
        "ms",
    );
    results.add(
        "patient_name_p99_ms",
        label("Patient?name", "p99"),
        quantile(&name_ms, 0.99),
        "ms",
    );
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(T0_SECS), "2024-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 + 3_661), "2000-02-29T01:01:01Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn generated_resources_are_valid_fhir() {
        for i in [0, 1, 7, 12_345] {
            let o = observation(i, 10);
            let outcome = vigil_fhir::validate::validate(&o);
            assert!(!outcome.has_errors(), "{o}: {outcome:?}");
        }
        let outcome = vigil_fhir::validate::validate(&patient(3, 10));
        assert!(!outcome.has_errors(), "{outcome:?}");
    }

    #[test]
    fn quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v[..1], 0.99), 1.0);
    }
}
