//! Equipment models: the joint normal operating states of several related points of one device (an AHU's supply
//! and return temperatures, fan power and valve position; a pump's flow, pressure and power).
//!
//! During training an [`EquipmentDetector`] keeps up to `train_rows` rows (one value per point). Then it fits a
//! Gaussian mixture (k-means++ seeding, then EM with full covariances, on standardised columns) and from then
//! on scores each row by its Mahalanobis distance to the most likely operating state: a row that fits no
//! learnt state ("fan running at full power, valve open, yet supply air as warm as return air") is unusual even
//! when every value is within its own normal range, which per-point detectors cannot see.
//!
//! Score: `d²` is turned into a tail probability `p` with the chi-square law of `dims` degrees of freedom
//! (Wilson–Hilferty), and `score = min(1, log10(1/p) / 8)`: 0.5 ≈ p = 1e-4, 0.95 ≈ p = 2.5e-8, so
//! `score_above: 0.95` fires only on rows that no learnt state explains. [`EquipmentScore::worst`] names the point
//! that departs most from that state.
//!
//! Why not linfa-clustering's `GaussianMixtureModel`: it gives no per-sample likelihood (it would have to be
//! recomputed from its parameters anyway) and brings ndarray + linfa (~30 crates) into a 2-core build; EM for
//! a handful of dimensions is ~100 lines here.

use super::forecast::normal_cdf;
use serde::{Deserialize, Serialize};

/// Most points in one equipment model.
pub const MAX_DIMS: usize = 8;

/// Operating states of the daemon's equipment models (`equipment_anomaly`), and of `caretaker detect --columns`.
pub const STATES: usize = 3;
/// Complete rows the daemon's equipment models (and `caretaker detect --columns`) train on before scoring.
pub const TRAIN_ROWS: usize = 500;

/// A fitted mixture on standardised columns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mixture {
    dims: usize,
    /// Per column: mean and standard deviation used to standardise.
    center: Vec<f64>,
    scale: Vec<f64>,
    weights: Vec<f64>,
    means: Vec<Vec<f64>>,
    /// Lower Cholesky factor of each component's covariance (row-major dims×dims).
    chol: Vec<Vec<f64>>,
    log_det: Vec<f64>,
}

/// How one row looked to the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EquipmentScore {
    /// In [0, 1]; see the module docs for the scale.
    pub score: f64,
    /// `log10(1/p)`, unclamped (`score` is this / 8, capped at 1): comparable between rows beyond saturation.
    pub surprise: f64,
    /// Squared Mahalanobis distance to the most likely state.
    pub d2: f64,
    /// Index of the most likely operating state.
    pub state: usize,
    /// The column that departs most from that state, and by how many of its standard deviations (signed).
    pub worst: (usize, f64),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FitError {
    #[error("need at least {need} training rows, got {got}")]
    TooFew { need: usize, got: usize },
    #[error("rows must have between 1 and {MAX_DIMS} values, got {0}")]
    Dims(usize),
}

impl Mixture {
    /// Fits `k` states to `rows` (all the same length). Deterministic for given rows.
    pub fn fit(rows: &[Vec<f64>], k: usize) -> Result<Self, FitError> {
        let dims = rows.first().map(|r| r.len()).unwrap_or(0);
        if dims == 0 || dims > MAX_DIMS || rows.iter().any(|r| r.len() != dims) {
            return Err(FitError::Dims(dims));
        }
        let k = k.max(1);
        let need = (k * (dims + 1) * 4).max(20);
        if rows.len() < need {
            return Err(FitError::TooFew {
                need,
                got: rows.len(),
            });
        }
        let n = rows.len() as f64;
        let center: Vec<f64> = (0..dims)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let scale: Vec<f64> = (0..dims)
            .map(|j| {
                let v = rows.iter().map(|r| (r[j] - center[j]).powi(2)).sum::<f64>() / n;
                v.sqrt().max(1e-9 + 1e-6 * center[j].abs())
            })
            .collect();
        let x: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| (0..dims).map(|j| (r[j] - center[j]) / scale[j]).collect())
            .collect();

        // k-means++ seeding with a fixed seed: the same rows always give the same model.
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let mut means = vec![x[rng.usize(..x.len())].clone()];
        while means.len() < k {
            let d: Vec<f64> = x
                .iter()
                .map(|p| means.iter().map(|m| dist2(p, m)).fold(f64::MAX, f64::min))
                .collect();
            let total: f64 = d.iter().sum();
            if total <= 0.0 {
                break;
            }
            let mut pick = rng.f64() * total;
            let mut idx = 0;
            for (i, di) in d.iter().enumerate() {
                pick -= di;
                if pick <= 0.0 {
                    idx = i;
                    break;
                }
            }
            means.push(x[idx].clone());
        }
        let k = means.len();
        let mut m = Mixture {
            dims,
            center,
            scale,
            weights: vec![1.0 / k as f64; k],
            means,
            chol: vec![identity(dims); k],
            log_det: vec![0.0; k],
        };
        // EM with full covariances; a small ridge keeps flat or collinear columns invertible.
        let mut resp = vec![vec![0.0; k]; x.len()];
        for _ in 0..50 {
            for (p, r) in x.iter().zip(resp.iter_mut()) {
                let lp: Vec<f64> = (0..k).map(|c| m.log_weighted(p, c)).collect();
                let mx = lp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = lp.iter().map(|l| (l - mx).exp()).sum();
                for c in 0..k {
                    r[c] = (lp[c] - mx).exp() / s;
                }
            }
            for c in 0..k {
                let nk: f64 = resp.iter().map(|r| r[c]).sum::<f64>().max(1e-9);
                let mean: Vec<f64> = (0..dims)
                    .map(|j| x.iter().zip(&resp).map(|(p, r)| r[c] * p[j]).sum::<f64>() / nk)
                    .collect();
                let mut cov = vec![0.0; dims * dims];
                for (p, r) in x.iter().zip(&resp) {
                    for a in 0..dims {
                        for b in 0..=a {
                            cov[a * dims + b] += r[c] * (p[a] - mean[a]) * (p[b] - mean[b]);
                        }
                    }
                }
                for a in 0..dims {
                    for b in 0..=a {
                        cov[a * dims + b] /= nk;
                        cov[b * dims + a] = cov[a * dims + b];
                    }
                    cov[a * dims + a] += 1e-3;
                }
                let l = cholesky(&cov, dims);
                m.log_det[c] = 2.0 * (0..dims).map(|a| l[a * dims + a].ln()).sum::<f64>();
                m.chol[c] = l;
                m.means[c] = mean;
                m.weights[c] = nk / n;
            }
        }
        Ok(m)
    }

    /// Number of operating states.
    pub fn states(&self) -> usize {
        self.means.len()
    }

    fn mahalanobis(&self, p: &[f64], c: usize) -> f64 {
        // Solve L y = (p - mean); d² = |y|².
        let l = &self.chol[c];
        let mu = &self.means[c];
        let d = self.dims;
        let mut y = [0.0f64; MAX_DIMS];
        let mut s = 0.0;
        for a in 0..d {
            let mut v = p[a] - mu[a];
            for b in 0..a {
                v -= l[a * d + b] * y[b];
            }
            y[a] = v / l[a * d + a];
            s += y[a] * y[a];
        }
        s
    }

    fn log_weighted(&self, p: &[f64], c: usize) -> f64 {
        self.weights[c].max(1e-300).ln() - 0.5 * (self.log_det[c] + self.mahalanobis(p, c))
    }

    /// Scores one row (same column order as training).
    pub fn score(&self, row: &[f64]) -> EquipmentScore {
        let d = self.dims;
        let mut p = [0.0f64; MAX_DIMS];
        for j in 0..d.min(row.len()) {
            p[j] = (row[j] - self.center[j]) / self.scale[j];
        }
        let p = &p[..d];
        let best = (0..self.states())
            .max_by(|&a, &b| self.log_weighted(p, a).total_cmp(&self.log_weighted(p, b)))
            .unwrap_or(0);
        let d2 = self.mahalanobis(p, best);
        // Wilson–Hilferty: (d²/k)^(1/3) is close to normal with mean 1 - 2/(9k), variance 2/(9k).
        let k = d as f64;
        let v = 2.0 / (9.0 * k);
        let z = ((d2 / k).cbrt() - (1.0 - v)) / v.sqrt();
        let tail = (1.0 - normal_cdf(z)).max(1e-300);
        let surprise = (-tail.log10()).max(0.0);
        let score = (surprise / 8.0).clamp(0.0, 1.0);
        let l = &self.chol[best];
        let mut worst = (0usize, 0.0f64);
        for j in 0..d {
            let sd = (0..=j).map(|b| l[j * d + b].powi(2)).sum::<f64>().sqrt();
            let zj = (p[j] - self.means[best][j]) / sd;
            if zj.abs() > worst.1.abs() {
                worst = (j, zj);
            }
        }
        EquipmentScore {
            score,
            surprise,
            d2,
            state: best,
            worst,
        }
    }
}

/// Training-then-scoring wrapper for one piece of equipment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EquipmentDetector {
    states: usize,
    train_rows: usize,
    rows: Vec<Vec<f64>>,
    model: Option<Mixture>,
}

impl EquipmentDetector {
    /// Learns `states` operating states from the first `train_rows` complete rows.
    pub fn new(states: usize, train_rows: usize) -> Self {
        EquipmentDetector {
            states,
            train_rows,
            rows: Vec::new(),
            model: None,
        }
    }

    /// Feeds one row; `None` while training (and for rows with a non-finite value).
    pub fn observe(&mut self, row: &[f64]) -> Option<EquipmentScore> {
        if row.iter().any(|v| !v.is_finite()) {
            return None;
        }
        if let Some(m) = &self.model {
            return Some(m.score(row));
        }
        self.rows.push(row.to_vec());
        if self.rows.len() >= self.train_rows {
            if let Ok(m) = Mixture::fit(&self.rows, self.states) {
                self.model = Some(m);
                self.rows = Vec::new();
            } else {
                self.train_rows *= 2;
            }
        }
        None
    }

    pub fn model(&self) -> Option<&Mixture> {
        self.model.as_ref()
    }
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn identity(d: usize) -> Vec<f64> {
    let mut m = vec![0.0; d * d];
    for i in 0..d {
        m[i * d + i] = 1.0;
    }
    m
}

/// Lower Cholesky factor of a symmetric positive definite matrix (row-major); pivots are floored for safety.
fn cholesky(a: &[f64], d: usize) -> Vec<f64> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= l[i * d + k] * l[j * d + k];
            }
            if i == j {
                l[i * d + i] = s.max(1e-9).sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic AHU: [supply temp °C, return temp °C, fan power kW, cooling valve %].
    /// Occupied: fan on, valve follows load, supply = return - 0.08·valve. Unoccupied: fan off, valve shut,
    /// supply drifts to return.
    fn ahu_row(rng: &mut fastrand::Rng, occupied: bool) -> Vec<f64> {
        let ret = 22.0 + 2.0 * rng.f64();
        if occupied {
            let valve = 30.0 + 50.0 * rng.f64();
            let fan = 3.0 + 0.03 * valve + 0.2 * (rng.f64() - 0.5);
            vec![
                ret - 0.08 * valve + 0.3 * (rng.f64() - 0.5),
                ret,
                fan,
                valve,
            ]
        } else {
            vec![
                ret - 0.5 + 0.3 * (rng.f64() - 0.5),
                ret,
                0.05 * rng.f64(),
                0.0,
            ]
        }
    }

    #[test]
    fn learns_operating_states_and_flags_a_stuck_valve() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut det = EquipmentDetector::new(3, 600);
        for i in 0..600 {
            assert_eq!(det.observe(&ahu_row(&mut rng, i % 3 != 0)), None);
        }
        assert!(det.model().is_some(), "trained after 600 rows");
        // Normal operation: almost never above 0.5, never above 0.95.
        let mut high = 0;
        for i in 0..2000 {
            let s = det.observe(&ahu_row(&mut rng, i % 2 == 0)).unwrap();
            assert!(s.score < 0.95, "normal row scored {s:?}");
            if s.score > 0.5 {
                high += 1;
            }
        }
        assert!(high <= 10, "{high} of 2000 normal rows above 0.5");
        // Faults whose values are each within their normal range: fan at full power and valve 80 % open, yet
        // supply air as warm as return air (valve stuck / no chilled water) ...
        let s = det.observe(&[23.0, 23.0, 5.4, 80.0]).unwrap();
        assert!(s.score > 0.95, "{s:?}");
        assert_eq!(
            s.worst.0, 0,
            "the supply temperature is what departs: {s:?}"
        );
        // ... and fan off while the valve is open.
        let s = det.observe(&[18.0, 23.0, 0.02, 60.0]).unwrap();
        assert!(s.score > 0.95, "{s:?}");
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(
            Mixture::fit(&vec![vec![1.0, 2.0]; 5], 2),
            Err(FitError::TooFew { need: 24, got: 5 })
        );
        assert_eq!(Mixture::fit(&[vec![]], 1), Err(FitError::Dims(0)));
        let mut det = EquipmentDetector::new(2, 10);
        assert_eq!(det.observe(&[f64::NAN, 1.0]), None);
    }

    #[test]
    fn model_state_round_trips() {
        let mut rng = fastrand::Rng::with_seed(9);
        let rows: Vec<Vec<f64>> = (0..300).map(|i| ahu_row(&mut rng, i % 2 == 0)).collect();
        let m = Mixture::fit(&rows, 2).unwrap();
        let back: Mixture = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        // JSON may move a float by one ulp; the scores must agree to far better than anything that matters.
        for r in &rows[..20] {
            let (a, b) = (m.score(r), back.score(r));
            assert!(
                (a.d2 - b.d2).abs() < 1e-9 * (1.0 + a.d2) && a.state == b.state,
                "{a:?} {b:?}"
            );
        }
    }
}
