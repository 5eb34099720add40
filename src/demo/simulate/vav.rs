//! A VAV air handler with an economizer, heating and cooling coils and a duct-static fan loop: the unit the
//! Guideline 36 rules (`rules/g36-ahu.yaml`) judge, with the faults they are meant to find.
//!
//! The controller follows the usual single-loop sequence on the *measured* supply air temperature: heating
//! valve, then outdoor-air damper (economizer, when outdoor air is colder than return air), then cooling valve,
//! with hysteresis between modes. A slow integral correction closes the loop on the measured SAT, so a failed
//! sensor drives the coils the way a real controller would. Scripted faults:
//! - `stuck_damper`: the outdoor-air damper blade stays fully open whatever its command (→ G36 FC6, outdoor-air
//!   fraction far from the minimum while heating);
//! - `leaking_valve`: the cooling valve passes chilled water while closed, 3.5 K of cooling (→ FC8 in economizer
//!   mode; in heating the loop hides it: SAT stays at setpoint, below MAT by less than FC5's margin);
//! - `failed_sat_sensor`: the supply-air sensor reads 45 degC (→ the loop cools flat out: FC13, FC12, FC11);
//! - `static_pressure_loss`: a duct leak; the fan cannot reach the static setpoint at full speed (→ FC1).

/// Supply air temperature setpoint, degC.
pub const SAT_SP: f64 = 16.0;
/// Duct static pressure setpoint, Pa.
pub const DSP_SP: f64 = 250.0;
/// Minimum outdoor-air damper position, percent (= design minimum outdoor air / design airflow).
pub const OAD_MIN: f64 = 20.0;
/// Design supply airflow at full speed, m3/h.
const DESIGN_FLOW: f64 = 12_000.0;
/// Temperature rise across the supply fan, K.
const FAN_RISE: f64 = 0.8;
const HEAT_MAX_K: f64 = 25.0;
const COOL_MAX_K: f64 = 15.0;
const LEAK_K: f64 = 3.5;

/// Which of the VAV AHU's faults are active.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VavFaults {
    pub stuck_damper: bool,
    pub leaking_valve: bool,
    pub failed_sat_sensor: bool,
    pub static_loss: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Heating,
    Economizer,
    EconMech,
    MechCooling,
}

/// The unit's state.
#[derive(Debug, Clone)]
pub struct VavAhu {
    fan_on: bool,
    fan: f64,
    dsp: f64,
    sat: f64,
    sat_meas: f64,
    mat: f64,
    rat: f64,
    oat: f64,
    hc: f64,
    cc: f64,
    oad: f64,
    flow: f64,
    /// Integral correction of the supply-air loop, K (what the feed-forward sequence misses).
    bias: f64,
    mode: Mode,
}

impl Default for VavAhu {
    fn default() -> Self {
        VavAhu {
            fan_on: false,
            fan: 0.0,
            dsp: 0.0,
            sat: 18.0,
            sat_meas: 18.0,
            mat: 18.0,
            rat: 20.0,
            oat: 3.0,
            hc: 0.0,
            cc: 0.0,
            oad: 0.0,
            flow: 0.0,
            bias: 0.0,
            mode: Mode::Economizer,
        }
    }
}

fn approach(v: f64, target: f64, dt: f64, tau: f64) -> f64 {
    v + (target - v) * (1.0 - (-dt / tau).exp())
}

impl VavAhu {
    /// One step of `dt` seconds. `on`: scheduled to run; `occ`: occupancy 0..1; `noise`: a sample of sensor
    /// noise (about ±1) per call.
    pub fn step(
        &mut self,
        dt: f64,
        on: bool,
        occ: f64,
        outdoor: f64,
        f: VavFaults,
        noise: &mut dyn FnMut() -> f64,
    ) {
        self.oat = outdoor;
        self.fan_on = on;
        if !on {
            self.fan = 0.0;
            self.flow = 0.0;
            self.dsp = approach(self.dsp, 0.0, dt, 20.0);
            self.hc = 0.0;
            self.cc = 0.0;
            self.oad = 0.0;
            self.bias = 0.0;
            self.rat = approach(self.rat, 18.0, dt, 3.0 * 3600.0);
            self.mat = approach(self.mat, self.rat - 0.5, dt, 1800.0);
            self.sat = approach(self.sat, self.mat, dt, 1800.0);
            self.sat_meas = if f.failed_sat_sensor {
                45.0
            } else {
                self.sat + 0.05 * noise()
            };
            return;
        }
        // Return air follows the zones (internal gains while occupied).
        self.rat = approach(self.rat, 21.0 + 1.2 * occ, dt, 1800.0);
        // Fan: the zones ask for 55-80 % of design airflow; the speed loop holds the static setpoint.
        let want_flow = 0.55 + 0.25 * occ;
        let k: f64 = if f.static_loss { 0.45 } else { 1.0 };
        let speed_needed = 100.0 * want_flow / k.sqrt();
        self.fan = approach(self.fan, speed_needed.min(100.0), dt, 60.0);
        let dsp_target = DSP_SP * k * (self.fan / 100.0 / want_flow).powi(2);
        self.dsp = approach(self.dsp, dsp_target.min(DSP_SP * 1.05), dt, 30.0) + 2.0 * noise();
        self.flow = DESIGN_FLOW * want_flow;
        // Supply-air loop: feed-forward sequence on a corrected setpoint, integral on the measured SAT.
        let err = self.sat_meas - SAT_SP;
        self.bias = (self.bias + err * dt / 900.0).clamp(-30.0, 30.0);
        let sp = SAT_SP - self.bias;
        let need_mat = sp - FAN_RISE;
        let econ_ok = self.oat < self.rat - 1.0;
        let x = if econ_ok {
            (need_mat - self.rat) / (self.oat - self.rat)
        } else {
            f64::NAN
        };
        let xmin = OAD_MIN / 100.0;
        // Mode with hysteresis: leave a mode only when the required damper position is clearly past its limits.
        self.mode = match self.mode {
            _ if !econ_ok => {
                if self.rat * (1.0 - xmin) + self.oat * xmin + FAN_RISE > sp {
                    Mode::MechCooling
                } else {
                    Mode::Heating
                }
            }
            Mode::Heating if x > xmin + 0.04 => Mode::Economizer,
            Mode::Economizer if x < xmin - 0.02 => Mode::Heating,
            Mode::Economizer if x > 1.02 => Mode::EconMech,
            Mode::EconMech if x < 0.96 => Mode::Economizer,
            Mode::MechCooling => Mode::Economizer,
            m => m,
        };
        let (oad_cmd, hc, cc) = match self.mode {
            Mode::Heating => {
                let mat = self.rat * (1.0 - xmin) + self.oat * xmin;
                (OAD_MIN, 100.0 * (need_mat - mat) / HEAT_MAX_K, 0.0)
            }
            Mode::Economizer => (100.0 * x.clamp(xmin, 1.0), 0.0, 0.0),
            Mode::EconMech => (100.0, 0.0, 100.0 * (self.oat - need_mat) / COOL_MAX_K),
            Mode::MechCooling => {
                let mat = self.rat * (1.0 - xmin) + self.oat * xmin;
                (OAD_MIN, 0.0, 100.0 * (mat - need_mat) / COOL_MAX_K)
            }
        };
        // Commands are whole tenths of a percent, exactly 0 when closed (as controllers report them).
        let q = |v: f64| (v.clamp(0.0, 100.0) * 10.0).round() / 10.0;
        self.oad = q(oad_cmd);
        self.hc = q(hc);
        self.cc = q(cc);
        // Physics: the damper blade (stuck: fully open), mixing, fan heat, coils, a leaking cooling valve.
        let blade = if f.stuck_damper { 100.0 } else { self.oad };
        let mix = blade / 100.0;
        let mat_true = self.rat * (1.0 - mix) + self.oat * mix;
        self.mat = approach(self.mat, mat_true, dt, 60.0);
        let leak = if f.leaking_valve && self.cc < 1.0 {
            LEAK_K
        } else {
            0.0
        };
        let sat_true = self.mat + FAN_RISE + HEAT_MAX_K * self.hc / 100.0
            - COOL_MAX_K * self.cc / 100.0
            - leak;
        self.sat = approach(self.sat, sat_true, dt, 120.0);
        self.sat_meas = if f.failed_sat_sensor {
            45.0
        } else {
            self.sat + 0.1 * noise()
        };
    }

    /// Changes with every step: seeds the sensor noise of [`VavAhu::value`].
    pub fn noise_seed(&self) -> u64 {
        (self.mat * 1e6) as i64 as u64 ^ ((self.rat * 1e6) as i64 as u64).rotate_left(17)
    }

    /// A named quantity (the generic-vav-ahu profile's point names), in the profile's units.
    pub fn value(&self, name: &str, noise: f64) -> Option<f64> {
        Some(match name {
            "supply_air_temp" => self.sat_meas,
            "mixed_air_temp" => self.mat + 0.3 * noise,
            "return_air_temp" => self.rat + 0.1 * noise,
            "outdoor_air_temp" => self.oat + 0.1 * noise,
            "supply_air_setpoint" => SAT_SP,
            "duct_static_pressure" => self.dsp.max(0.0),
            "duct_static_setpoint" => DSP_SP,
            "supply_fan_speed" => (self.fan * 10.0).round() / 10.0,
            "heating_valve" => self.hc,
            "cooling_valve" => self.cc,
            "oa_damper" => self.oad,
            "oa_damper_min" => OAD_MIN,
            "supply_airflow" => self.flow,
            "oa_flow_min_setpoint" => DESIGN_FLOW * 0.675 * OAD_MIN / 100.0,
            "fan_status" | "fan_running" => f64::from(self.fan_on),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: VavFaults, outdoor: f64) -> VavAhu {
        let mut a = VavAhu::default();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut noise = move || rng.f64() * 2.0 - 1.0;
        for _ in 0..240 {
            a.step(60.0, true, 1.0, outdoor, f, &mut noise);
        }
        a
    }

    #[test]
    fn a_healthy_unit_holds_its_setpoints_in_every_season() {
        for (oat, mode) in [
            (-20.0, Mode::Heating),
            (3.0, Mode::Economizer),
            (19.0, Mode::EconMech),
            (30.0, Mode::MechCooling),
        ] {
            let a = run(VavFaults::default(), oat);
            assert!((a.sat - SAT_SP).abs() < 0.5, "{oat}: sat {}", a.sat);
            assert!((a.dsp - DSP_SP).abs() < 10.0, "{oat}: dsp {}", a.dsp);
            assert_eq!(a.mode, mode, "{oat}");
        }
    }

    #[test]
    fn each_fault_shows_where_guideline_36_looks() {
        // Static loss: full fan, static well below setpoint.
        let a = run(
            VavFaults {
                static_loss: true,
                ..Default::default()
            },
            3.0,
        );
        assert!(
            a.fan >= 99.0 && a.dsp < DSP_SP - 25.0,
            "{} {}",
            a.fan,
            a.dsp
        );
        // Leaking cooling valve in economizer mode: supply colder than mixed air + fan heat.
        let a = run(
            VavFaults {
                leaking_valve: true,
                ..Default::default()
            },
            9.0,
        );
        assert!(
            a.cc == 0.0 && a.hc == 0.0 && a.sat - 1.1 - a.mat < -3.0,
            "{a:?}"
        );
        // Stuck damper: mixed air at outdoor temperature while the command sits at the minimum and heating runs.
        let a = run(
            VavFaults {
                stuck_damper: true,
                ..Default::default()
            },
            3.0,
        );
        assert!(
            a.oad == OAD_MIN && a.hc > 0.0 && (a.mat - a.oat).abs() < 0.5,
            "{a:?}"
        );
        // Failed SAT sensor: the loop cools flat out.
        let a = run(
            VavFaults {
                failed_sat_sensor: true,
                ..Default::default()
            },
            3.0,
        );
        assert!(a.cc >= 99.0 && a.sat_meas == 45.0, "{a:?}");
    }
}
