//! `caretaker simulate`: the simulated campus alone, until Ctrl-C or `--for`.

use std::path::PathBuf;

pub async fn run(
    site: PathBuf,
    speed: Option<f64>,
    mqtt: Option<String>,
    modbus_host: Option<String>,
    start: Option<String>,
    run_for: Option<String>,
) -> anyhow::Result<i32> {
    use crate::demo::simulate::{self, site::SiteSpec};
    let mut spec = match SiteSpec::load(&site) {
        Ok(s) => s,
        Err(errs) => {
            for e in &errs {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s) in {}", errs.len(), site.display());
            return Ok(1);
        }
    };
    if let Some(s) = speed {
        if !(s > 0.0 && s <= 100_000.0) {
            anyhow::bail!("--speed must be above 0 and at most 100000");
        }
        spec.speed = s;
    }
    match start.as_deref() {
        None => {}
        Some("now") => spec.start = None,
        Some(s) => {
            spec.start = Some(s.parse().map_err(|e| {
                anyhow::anyhow!(
                    "--start: `{s}` is not `now` or a local date-time like 2026-01-12T04:00:00: {e}"
                )
            })?)
        }
    }
    let mqtt = match mqtt {
        None => None,
        Some(u) => {
            let rest = u
                .strip_prefix("mqtt://")
                .ok_or_else(|| anyhow::anyhow!("--mqtt: use mqtt://host:port"))?;
            let (h, p) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
            Some((
                h.to_string(),
                p.parse()
                    .map_err(|_| anyhow::anyhow!("--mqtt: bad port `{p}`"))?,
            ))
        }
    };
    let run_for = super::parse_for(run_for)?;
    let (profiles, errs) = crate::catalog::profile::load_dirs(&spec.profile_dirs);
    if !errs.is_empty() {
        for e in &errs {
            eprintln!("error: {e}");
        }
        return Ok(1);
    }
    let clock = simulate::Clock {
        real_start: std::time::Instant::now(),
        start_ns: simulate::start_ns(&spec),
        speed: spec.speed,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let running = simulate::start(
        &spec,
        &profiles,
        clock,
        &simulate::Options {
            mqtt,
            modbus_host,
            ephemeral_ports: false,
            skip_unknown_profiles: false,
        },
        stop.clone(),
    )
    .await?;
    tracing::info!(
        site = %spec.name,
        speed = spec.speed,
        "simulating {}",
        simulate::summary(&running.devices)
    );
    for f in &running.faults {
        let at = jiff::Timestamp::from_nanosecond(f.from_ns as i128)
            .map(|t| t.to_zoned_datetime(spec.timezone.clone()).to_string())
            .unwrap_or_default();
        tracing::info!(device = %f.device, fault = f.kind.as_str(), starts = %at, "scripted fault");
    }
    match run_for {
        Some(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = crate::app::wait_for_signal() => {}
            }
        }
        None => crate::app::wait_for_signal().await,
    }
    stop.cancel();
    let _ = running.task.await;
    let st = &running.status;
    tracing::info!(
        published = st.mqtt_published.load(std::sync::atomic::Ordering::Relaxed),
        dropped = st.mqtt_dropped.load(std::sync::atomic::Ordering::Relaxed),
        "simulation stopped"
    );
    Ok(0)
}

/// `caretaker simulate --export-csv FILE`: the site stepped offline into `backtest` CSV plus truth labels.
pub fn export(
    site: PathBuf,
    start: Option<String>,
    out: PathBuf,
    truth: Option<PathBuf>,
    model: Option<String>,
    span: &str,
) -> anyhow::Result<i32> {
    use crate::demo::simulate::{self, site::ModelKind, site::SiteSpec};
    let mut spec = match SiteSpec::load(&site) {
        Ok(s) => s,
        Err(errs) => {
            for e in &errs {
                eprintln!("error: {e}");
            }
            return Ok(1);
        }
    };
    if let Some(s) = start.as_deref().filter(|s| *s != "now") {
        spec.start = Some(s.parse().map_err(|e| {
            anyhow::anyhow!("--start: `{s}` is not a local date-time like 2026-01-12T04:00:00: {e}")
        })?);
    }
    let only = match model.as_deref() {
        None => None,
        Some(m) => Some(ModelKind::parse(m).ok_or_else(|| {
            anyhow::anyhow!(
                "--model: unknown model `{m}`; expected one of: {}",
                ModelKind::ALL.join(", ")
            )
        })?),
    };
    let span = crate::util::parse_duration(span).map_err(|m| anyhow::anyhow!("--span: {m}"))?;
    let (profiles, errs) = crate::catalog::profile::load_dirs(&spec.profile_dirs);
    if !errs.is_empty() {
        for e in &errs {
            eprintln!("error: {e}");
        }
        return Ok(1);
    }
    let truth = truth.unwrap_or_else(|| out.with_extension("truth.csv"));
    let mut w = std::io::BufWriter::new(std::fs::File::create(&out)?);
    let mut tw = std::io::BufWriter::new(std::fs::File::create(&truth)?);
    let (rows, labels) = simulate::export_csv(
        &spec,
        &profiles,
        only,
        simulate::start_ns(&spec),
        span.as_nanos().min(i64::MAX as u128) as i64,
        &mut w,
        &mut tw,
    )?;
    use std::io::Write;
    w.flush()?;
    tw.flush()?;
    eprintln!(
        "wrote {rows} readings to {} and {labels} fault labels to {}",
        out.display(),
        truth.display()
    );
    Ok(0)
}
