//! `caretaker detect`: offline anomaly scoring of a CSV with the daemon's detector.

/// `caretaker detect`: offline scoring with the daemon's detector.
#[allow(clippy::too_many_arguments)]
pub fn detect(
    input: &std::path::Path,
    output: &std::path::Path,
    detector: &str,
    set: &[String],
    output_score: &str,
    columns: &[String],
    delimiter: Option<&str>,
    decimal: Option<&str>,
) -> anyhow::Result<i32> {
    use crate::anomaly::csv::{Options, OutputScore};
    use crate::anomaly::{Kind, Params};
    let output_score = OutputScore::parse(output_score).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown --output-score `{output_score}` (choose one of: {})",
            OutputScore::NAMES.join(", ")
        )
    })?;
    let (csv, columns) = super::energy::csv_options(columns, delimiter, decimal)?;
    if let Some((k, _)) = csv
        .columns
        .iter()
        .find(|(k, _)| k != "timestamp" && k != "value")
    {
        anyhow::bail!("--columns {k}=...: only timestamp= and value= can be mapped");
    }
    let kind = Kind::parse(detector).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown detector `{detector}` (choose one of: {})",
            Kind::NAMES.join(", ")
        )
    })?;
    let mut params = serde_json::to_value(Params::default())?;
    for kv in set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set `{kv}`: expected KEY=VALUE"))?;
        let keys: Vec<String> = params
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let slot = params.get_mut(k).ok_or_else(|| {
            anyhow::anyhow!(
                "--set `{kv}`: unknown parameter `{k}` (known: {})",
                keys.join(", ")
            )
        })?;
        *slot =
            serde_json::from_str(v).map_err(|e| anyhow::anyhow!("--set `{kv}`: bad value: {e}"))?;
    }
    let params: Params =
        serde_json::from_value(params).map_err(|e| anyhow::anyhow!("--set: {e}"))?;
    let started = std::time::Instant::now();
    let opts = Options {
        kind,
        params,
        output: output_score,
        columns,
        csv,
    };
    let rows = crate::anomaly::csv::detect_file(input, output, &opts)?;
    tracing::info!(
        rows,
        input = %input.display(),
        output = %output.display(),
        seconds = started.elapsed().as_secs_f64(),
        "scored"
    );
    Ok(0)
}
