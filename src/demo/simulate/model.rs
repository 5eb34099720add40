//! Physics and schedules of the simulated devices: what each model's quantities are at a simulated moment.
//!
//! Models are plain structs stepped forward in simulated time (at most one simulated minute per step, so the
//! first-order dynamics and the counters integrate smoothly at any speed). Each exposes named quantities with
//! their unit; `encode` maps them onto a profile's points by name (and a few aliases) and converts units, so any
//! profile with matching point names works. Randomness comes from one seeded generator per device: a run is
//! reproducible from the site file's `seed`.

use super::site::ModelKind;
use crate::catalog::Unit;

/// AHU supply air setpoint, degC (cool enough that a healthy unit stays clear of "supply air too warm").
const SUPPLY_SETPOINT: f64 = 16.5;
/// AHU minimum outdoor-air fraction (the BACnet AHU's mixed air and damper positions).
const MIN_OA: f64 = 0.2;
/// The BACnet AHU's filter pressure switch: its filter status reads dirty above this pressure drop, Pa.
pub const FILTER_SWITCH_PA: f64 = 300.0;

/// What every model sees at a step.
#[derive(Debug, Clone, Copy)]
pub struct Env {
    /// Local hour of day, fractional (0.0..24.0).
    pub hour: f64,
    /// 1 = Monday .. 7 = Sunday.
    pub weekday: i8,
    /// Outdoor air temperature, degC.
    pub outdoor: f64,
    /// Simulated seconds since the previous step.
    pub dt: f64,
}

impl Env {
    pub fn workday(&self) -> bool {
        self.weekday <= 5
    }
    /// Office hours with a soft start and end (people trickle in and out).
    pub fn occupancy(&self) -> f64 {
        if !self.workday() {
            return 0.0;
        }
        let ramp = |a: f64, b: f64, h: f64| ((h - a) / (b - a)).clamp(0.0, 1.0);
        let lunch = if (12.0..13.0).contains(&self.hour) {
            0.6
        } else {
            1.0
        };
        ramp(7.5, 9.0, self.hour) * (1.0 - ramp(17.0, 18.5, self.hour)) * lunch
    }
    /// Daylight on a 0..1 scale (winter-ish: 8:00 to 16:30).
    pub fn daylight(&self) -> f64 {
        let x = (self.hour - 8.0) / 8.5;
        if (0.0..=1.0).contains(&x) {
            (std::f64::consts::PI * x).sin()
        } else {
            0.0
        }
    }
}

/// The fault state a model sees at a step.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub stuck: bool,
    pub leak: bool,
    /// Filter clogging: (progress 0..1, target pressure drop in Pa).
    pub clog: Option<(f64, f64)>,
    /// Short-cycling: the fan's forced state in this part of the cycle.
    pub short_cycle_on: Option<bool>,
    /// The VAV AHU's faults (stuck damper, leaking valve, failed SAT sensor, static pressure loss).
    pub vav: super::vav::VavFaults,
}

/// Outdoor temperature: a daily sine (coldest ~05:00, warmest ~15:00) around the mean.
pub fn outdoor_temp(mean: f64, swing: f64, hour: f64) -> f64 {
    mean + swing * (std::f64::consts::TAU * (hour - 9.0) / 24.0).sin()
}

fn noise(rng: &mut fastrand::Rng, sigma: f64) -> f64 {
    // Sum of uniforms: cheap, bounded, close enough to normal for sensor noise.
    (rng.f64() + rng.f64() + rng.f64() - 1.5) * 2.0 * sigma
}

fn approach(v: f64, target: f64, dt: f64, tau: f64) -> f64 {
    v + (target - v) * (1.0 - (-dt / tau).exp())
}

/// One simulated device's physical state.
#[derive(Debug, Clone)]
pub struct Model {
    pub kind: ModelKind,
    size: f64,
    rng: fastrand::Rng,
    // Room.
    temp: f64,
    reported_temp: f64,
    humidity: f64,
    co2: f64,
    lux: f64,
    occupied: bool,
    // Electrical.
    power_w: f64,
    energy_kwh: f64,
    voltage: f64,
    pf: f64,
    // Water.
    flow_m3h: f64,
    volume_m3: f64,
    // AHU.
    fan_on: bool,
    supply: f64,
    ret: f64,
    filter_dp: f64,
    fan_kw: f64,
    valve: f64,
    fan_starts: f64,
    run_hours: f64,
    heat_kwh: f64,
    outdoor: f64,
    // Lighting.
    level: f64,
    // Battery devices.
    battery: f64,
    leak: bool,
    /// Personal offset so rooms and plugs do not move in lockstep.
    quirk: f64,
    // VAV AHU (Guideline 36 fault detection).
    vav: super::vav::VavAhu,
}

impl Model {
    pub fn new(kind: ModelKind, size: f64, seed: u64) -> Model {
        let mut rng = fastrand::Rng::with_seed(seed);
        let quirk = rng.f64();
        Model {
            kind,
            size,
            temp: 20.0 + quirk,
            reported_temp: 20.0 + quirk,
            humidity: 40.0,
            co2: 450.0,
            lux: 0.0,
            occupied: false,
            power_w: 0.0,
            energy_kwh: 1000.0 * size * (1.0 + quirk),
            voltage: 230.0,
            pf: 0.95,
            flow_m3h: 0.0,
            volume_m3: 500.0 * (1.0 + quirk),
            fan_on: false,
            supply: 19.0,
            ret: 21.0,
            filter_dp: 0.0,
            fan_kw: 0.0,
            valve: 0.0,
            fan_starts: 0.0,
            run_hours: 5000.0 * quirk,
            heat_kwh: 20_000.0 * quirk,
            outdoor: 5.0,
            level: 0.0,
            battery: 90.0 + 10.0 * quirk,
            leak: false,
            quirk,
            rng,
            vav: Default::default(),
        }
    }

    /// Advances the model by `env.dt` simulated seconds.
    pub fn step(&mut self, env: &Env, f: &Faults) {
        let dt = env.dt;
        let occ = env.occupancy();
        let rng = &mut self.rng;
        match self.kind {
            ModelKind::Room => {
                // Heating follows a schedule (night and weekend set-back); people add heat and CO2.
                let heating = env.workday() && (6.0..19.0).contains(&env.hour);
                let setpoint = if heating { 21.5 } else { 17.0 } + self.quirk * 0.6;
                let t = approach(self.temp, setpoint, dt, 2.0 * 3600.0);
                let t = approach(t, env.outdoor, dt, 60.0 * 3600.0);
                self.temp = t + occ * 0.4 * dt / 3600.0 * (1.0 - (t - 23.0).max(0.0));
                if !f.stuck {
                    self.reported_temp = self.temp + noise(rng, 0.05);
                }
                self.humidity =
                    approach(self.humidity, 35.0 + 12.0 * occ, dt, 3600.0).clamp(20.0, 70.0);
                // Ventilated for ~900 ppm at full occupancy (below the usual 1000 ppm comfort limit).
                let co2_target = 420.0 + 450.0 * occ / self.size.max(0.5);
                self.co2 = approach(self.co2, co2_target, dt, 1800.0);
                self.occupied = occ > 0.3 && rng.f64() > 0.1;
                let lights = if occ > 0.05 { 400.0 } else { 0.0 };
                self.lux = (lights + 300.0 * env.daylight() + noise(rng, 5.0)).max(0.0);
                self.battery = (self.battery - dt / (365.0 * 86400.0) * 60.0).max(5.0);
            }
            ModelKind::Plug => {
                let on = occ > 0.2 && rng.f64() > 0.05;
                let target = if on {
                    (60.0 + 80.0 * self.quirk) * self.size
                } else {
                    3.5
                };
                self.power_w =
                    (approach(self.power_w, target, dt, 120.0) + noise(rng, 1.0)).max(0.5);
                self.energy_kwh += self.power_w * dt / 3.6e6;
                self.voltage = 230.0 + noise(rng, 1.5);
                self.pf = if on { 0.92 } else { 0.55 };
            }
            ModelKind::Leak => {
                self.leak = f.leak;
                self.battery = (self.battery - dt / (730.0 * 86400.0) * 60.0).max(5.0);
            }
            ModelKind::WaterMeter => {
                let use_m3h = 1.5 * self.size * occ * (0.6 + 0.8 * rng.f64());
                let leak = if f.leak { 0.35 * self.size } else { 0.0 };
                self.flow_m3h = use_m3h + leak;
                self.volume_m3 += self.flow_m3h * dt / 3600.0;
            }
            ModelKind::Meter => {
                // A building: a small base load at night (servers, fridges, emergency lighting), office load by
                // day, heating pumps in the cold while the plant runs (06:00-20:00 on workdays).
                let base = 3.0 * self.size;
                let day = 45.0 * self.size * occ;
                let plant = env.workday() && (6.0..20.0).contains(&env.hour);
                let cold = if plant {
                    (12.0 - env.outdoor).max(0.0) * 0.6 * self.size
                } else {
                    0.0
                };
                let target_kw = base + day + cold;
                let kw = approach(self.power_w / 1000.0, target_kw, dt, 600.0) + noise(rng, 0.3);
                self.power_w = kw.max(0.0) * 1000.0;
                self.energy_kwh += self.power_w * dt / 3.6e6;
                self.voltage = 231.0 + noise(rng, 1.0);
                self.pf = 0.93 + 0.03 * occ + noise(rng, 0.005);
            }
            ModelKind::Ahu => {
                let scheduled = env.workday() && (6.0..20.0).contains(&env.hour);
                let on = match f.short_cycle_on {
                    Some(forced) if scheduled => forced,
                    _ => scheduled,
                };
                if on && !self.fan_on {
                    self.fan_starts += 1.0;
                }
                self.fan_on = on;
                self.outdoor = env.outdoor;
                let (progress, clog_to) = f.clog.unwrap_or((0.0, 0.0));
                let clean_dp = 120.0;
                if on {
                    self.run_hours += dt / 3600.0;
                    self.supply =
                        approach(self.supply, SUPPLY_SETPOINT, dt, 300.0) + noise(rng, 0.08);
                    self.ret = approach(self.ret, 21.5 + occ, dt, 1800.0) + noise(rng, 0.05);
                    let dp = clean_dp + progress * (clog_to - clean_dp).max(0.0);
                    self.filter_dp = approach(self.filter_dp, dp, dt, 60.0) + noise(rng, 2.0);
                    // A clogged filter makes the fan work harder for the same airflow.
                    self.fan_kw = 4.0 * self.size * (self.filter_dp / clean_dp).sqrt().min(1.6)
                        + noise(rng, 0.03);
                    self.valve = ((18.0 - env.outdoor) * 5.0).clamp(0.0, 100.0);
                    self.heat_kwh += 40.0 * self.size * self.valve / 100.0 * dt / 3600.0;
                } else {
                    // The duct drifts slowly towards room temperature while the fan stands still.
                    self.supply = approach(self.supply, self.ret - 1.0, dt, 2400.0);
                    self.ret = approach(self.ret, 18.0, dt, 3.0 * 3600.0);
                    self.filter_dp = approach(self.filter_dp, 0.0, dt, 30.0).max(0.0);
                    self.fan_kw = 0.0;
                    self.valve = 0.0;
                }
                self.power_w = self.fan_kw * 1000.0;
                self.energy_kwh += self.fan_kw * dt / 3600.0;
            }
            ModelKind::VavAhu => {
                let on = env.workday() && (6.0..20.0).contains(&env.hour);
                let rng = &mut self.rng;
                let mut noise = || rng.f64() * 2.0 - 1.0;
                self.vav.step(dt, on, occ, env.outdoor, f.vav, &mut noise);
            }
            ModelKind::Lighting => {
                // Lights follow occupancy, dimmed by daylight; cleaners at 18:30-19:30.
                let cleaners = env.workday() && (18.5..19.5).contains(&env.hour);
                let want = if occ > 0.05 {
                    (100.0 - 60.0 * env.daylight()).max(30.0)
                } else if cleaners {
                    100.0
                } else {
                    0.0
                };
                self.level = approach(self.level, want, dt, 60.0);
                if self.level < 1.0 {
                    self.level = 0.0;
                }
                self.power_w = 1200.0 * self.size * self.level / 100.0;
                self.energy_kwh += self.power_w * dt / 3.6e6;
            }
        }
    }

    /// Outdoor relative humidity, percent: damp when cold, as a European winter is.
    fn outdoor_rh(&self) -> f64 {
        (88.0 - 2.0 * self.outdoor).clamp(35.0, 98.0)
    }

    /// Changes every step (the energy counter moves with time): a seed for the VAV AHU's sensor noise.
    fn vav_noise_seed(&self) -> u64 {
        self.vav.noise_seed()
    }

    /// A named quantity of this model, with its unit.
    pub fn value(&self, name: &str) -> Option<(f64, Unit)> {
        use ModelKind as M;
        let kw = self.power_w / 1000.0;
        let current = self.power_w / (self.voltage * self.pf.max(0.1));
        let phase = |i: f64| 1.0 + 0.04 * (i - 1.0) * (self.quirk - 0.5);
        Some(match (self.kind, name) {
            (M::Room, "temperature") => (self.reported_temp, Unit::DegC),
            (M::Room, "humidity") => (self.humidity, Unit::Percent),
            (M::Room, "co2") => (self.co2, Unit::Ppm),
            (M::Room, "illuminance") => (self.lux, Unit::Lux),
            (M::Room, "occupancy") => (f64::from(self.occupied), Unit::Bool),
            (M::Room, "pressure") => (101_300.0, Unit::Pa),
            (M::Room | M::Leak, "battery") => (self.battery.round(), Unit::Percent),
            (M::Room | M::Leak, "battery_voltage") => (2.6 + self.battery / 250.0, Unit::V),
            (M::Room | M::Leak, "link_quality") => (90.0 + 40.0 * self.quirk, Unit::Count),
            (M::Leak, "water_leak") => (f64::from(self.leak), Unit::Bool),
            (M::Leak, "battery_low") => (f64::from(self.battery < 15.0), Unit::Bool),
            (M::Leak, "tamper") => (0.0, Unit::Bool),
            (
                M::Plug | M::Meter | M::Ahu | M::Lighting,
                "power" | "power_total" | "active_power",
            ) => (self.power_w, Unit::W),
            (
                M::Plug | M::Meter | M::Ahu | M::Lighting,
                "energy_total" | "energy_import" | "import_energy",
            ) => (self.energy_kwh, Unit::KWh),
            (M::Plug, "switch_on") => (f64::from(self.power_w > 10.0), Unit::Bool),
            (M::Plug | M::Meter, "voltage") => (self.voltage, Unit::V),
            (M::Plug | M::Meter, "current") => (current, Unit::A),
            (M::Plug | M::Meter, "power_factor") => (self.pf, Unit::PowerFactor),
            (M::Plug | M::Meter, "apparent_power" | "apparent_power_total") => {
                (self.power_w / self.pf.max(0.1), Unit::VA)
            }
            (M::Plug | M::Meter, "reactive_power" | "reactive_power_total") => {
                let s = self.power_w / self.pf.max(0.1);
                (
                    (s * s - self.power_w * self.power_w).max(0.0).sqrt(),
                    Unit::Var,
                )
            }
            (M::Plug | M::Meter, "frequency") => (50.0, Unit::Hz),
            (M::Plug, "device_temperature") => (30.0 + self.power_w / 20.0, Unit::DegC),
            (M::Meter, "voltage_l1_l2" | "voltage_l2_l3" | "voltage_l3_l1") => {
                (self.voltage * 3f64.sqrt(), Unit::V)
            }
            (M::Meter, "power_factor_total") => (self.pf, Unit::PowerFactor),
            (M::Meter, "current_neutral") => (current / 3.0 * 0.08 * (1.0 + self.quirk), Unit::A),
            (M::Meter, "energy_export" | "reactive_energy_export") => (0.0, Unit::KWh),
            (M::Meter, "reactive_energy_import") => (self.energy_kwh * 0.33, Unit::KVarh),
            (M::Meter, n) if n.ends_with("_l1") || n.ends_with("_l2") || n.ends_with("_l3") => {
                let i: f64 = n[n.len() - 1..].parse().unwrap_or(1.0);
                let base = &n[..n.len() - 3];
                match base {
                    "voltage" => (self.voltage + (i - 2.0) * 0.7, Unit::V),
                    "current" => (current / 3.0 * phase(i), Unit::A),
                    "power" | "active_power" => (self.power_w / 3.0 * phase(i), Unit::W),
                    "power_factor" => (self.pf, Unit::PowerFactor),
                    "apparent_power" => (self.power_w / 3.0 / self.pf * phase(i), Unit::VA),
                    _ => return None,
                }
            }
            (M::Meter, "demand" | "power_demand") => (self.power_w, Unit::W),
            (M::WaterMeter, "flow" | "flow_rate" | "volume_flow") => (self.flow_m3h, Unit::M3PerH),
            (M::WaterMeter, "volume_total" | "volume" | "water_total") => {
                (self.volume_m3, Unit::M3)
            }
            (M::Ahu, "fan_status" | "fan_running" | "running") => {
                (f64::from(self.fan_on), Unit::Bool)
            }
            (M::Ahu, "supply_air_temp") => (self.supply, Unit::DegC),
            (M::Ahu, "return_air_temp") => (self.ret, Unit::DegC),
            (M::Ahu, "supply_air_setpoint") => (SUPPLY_SETPOINT, Unit::DegC),
            (M::Ahu, "outdoor_air_temp") => (self.outdoor, Unit::DegC),
            (M::Ahu, "filter_dp") => (self.filter_dp.max(0.0), Unit::Pa),
            // The controller's own pressure switch trips late, at 500 Pa (final pressure drop of F7 filters).
            (M::Ahu, "filter_alarm") => (f64::from(self.filter_dp > 500.0), Unit::Bool),
            (M::Ahu, "frost_alarm") => (0.0, Unit::Bool),
            (M::Ahu, "fan_run_hours") => (self.run_hours, Unit::Hours),
            (M::Ahu, "heating_energy") => (self.heat_kwh, Unit::KWh),
            (M::Ahu, "fan_power") => (kw, Unit::KW),
            (M::Ahu, "fan_speed") => (if self.fan_on { 80.0 } else { 0.0 }, Unit::Percent),
            (M::Ahu, "valve_position" | "heating_valve") => (self.valve, Unit::Percent),
            (M::Ahu, "fan_starts") => (self.fan_starts, Unit::Count),
            // The same unit through a packaged AHU controller's BACnet points (generic-bacnet-ahu, the Trane
            // BCI-I object map): 20 % minimum outdoor air while running, compressors off in this weather (the
            // evaporator sees mixed air), a filter pressure switch, multi-state 1 = off / clean, 2 = on / dirty.
            (
                M::Ahu,
                "mixed_air_temp" | "evaporator_entering_temp_c1" | "evaporator_leaving_temp_c1",
            ) => {
                let mixed = if self.fan_on {
                    self.ret * (1.0 - MIN_OA) + self.outdoor * MIN_OA
                } else {
                    self.ret - 0.5
                };
                (mixed, Unit::DegC)
            }
            (M::Ahu, "outdoor_air_damper_position" | "exhaust_damper_position") => (
                if self.fan_on { MIN_OA * 100.0 } else { 0.0 },
                Unit::Percent,
            ),
            (M::Ahu, "exhaust_fan_speed") => (if self.fan_on { 60.0 } else { 0.0 }, Unit::Percent),
            (M::Ahu, "outdoor_air_humidity") => (self.outdoor_rh(), Unit::Percent),
            (M::Ahu, "outdoor_air_dewpoint") => {
                // Magnus formula.
                let g = (self.outdoor_rh() / 100.0).ln()
                    + 17.62 * self.outdoor / (243.12 + self.outdoor);
                (243.12 * g / (17.62 - g), Unit::DegC)
            }
            // cfm: the profile's point has no unit word for it.
            (M::Ahu, "outdoor_air_flow") => (
                if self.fan_on {
                    MIN_OA * 4000.0 * self.size
                } else {
                    0.0
                },
                Unit::None,
            ),
            (M::Ahu, "filter_runtime") => (self.run_hours, Unit::Hours),
            (M::Ahu, "unit_on") => (f64::from(self.fan_on), Unit::Bool),
            (M::Ahu, "demand_limit" | "service_test") => (0.0, Unit::Bool),
            (
                M::Ahu,
                "occupancy_mode" | "supply_fan_proving" | "supply_fan_status" | "return_fan_status",
            ) => (if self.fan_on { 2.0 } else { 1.0 }, Unit::None),
            (M::Ahu, "primary_filter_status") => (
                if self.filter_dp > FILTER_SWITCH_PA {
                    2.0
                } else {
                    1.0
                },
                Unit::None,
            ),
            // 1 = at or below its minimum position.
            (M::Ahu, "outdoor_air_damper_status") => (1.0, Unit::None),
            (M::VavAhu, n) => {
                // Sensor noise from the name, so a value read twice in a step does not change.
                let h = n
                    .bytes()
                    .fold(self.quirk.to_bits(), |a, b| a.rotate_left(5) ^ u64::from(b));
                let noise = ((h ^ self.vav_noise_seed()) % 2001) as f64 / 1000.0 - 1.0;
                let v = self.vav.value(n, noise)?;
                let unit = match n {
                    "supply_airflow" | "oa_flow_min_setpoint" => Unit::M3PerH,
                    "duct_static_pressure" | "duct_static_setpoint" => Unit::Pa,
                    "supply_fan_speed" | "heating_valve" | "cooling_valve" | "oa_damper"
                    | "oa_damper_min" => Unit::Percent,
                    "fan_status" | "fan_running" => Unit::Bool,
                    _ => Unit::DegC,
                };
                (v, unit)
            }
            (M::Lighting, "lights_on" | "lamp_on" | "on") => {
                (f64::from(self.level > 0.0), Unit::Bool)
            }
            (M::Lighting, "level" | "dim_level" | "brightness") => (self.level, Unit::Percent),
            // DALI gateways report per ballast: every ballast of the zone follows the zone's level.
            (M::Lighting, n) if n.starts_with("ballast_") && n.ends_with("_level") => {
                (self.level, Unit::Percent)
            }
            (M::Lighting, n)
                if n.starts_with("ballast_")
                    && (n.ends_with("_lamp_failure") || n.ends_with("_gear_failure")) =>
            {
                (0.0, Unit::Bool)
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(hour: f64, weekday: i8) -> Env {
        Env {
            hour,
            weekday,
            outdoor: 5.0,
            dt: 60.0,
        }
    }

    fn run(m: &mut Model, from_h: f64, hours: f64, weekday: i8, f: &Faults) {
        let steps = (hours * 60.0) as usize;
        for i in 0..steps {
            let h = (from_h + i as f64 / 60.0) % 24.0;
            m.step(&env(h, weekday), f);
        }
    }

    #[test]
    fn rooms_set_back_at_night_and_fill_with_co2_by_day() {
        let mut m = Model::new(ModelKind::Room, 1.0, 1);
        run(&mut m, 6.0, 5.0, 2, &Faults::default());
        let (day_t, _) = m.value("temperature").unwrap();
        let (day_co2, _) = m.value("co2").unwrap();
        run(&mut m, 19.0, 9.0, 2, &Faults::default());
        let (night_t, _) = m.value("temperature").unwrap();
        let (night_co2, _) = m.value("co2").unwrap();
        assert!(day_t > 20.5 && night_t < day_t - 1.0, "{day_t} {night_t}");
        assert!(
            day_co2 > 750.0 && day_co2 < 1000.0 && night_co2 < 500.0,
            "{day_co2} {night_co2}"
        );
    }

    #[test]
    fn a_stuck_sensor_repeats_its_value_while_the_room_changes() {
        let mut m = Model::new(ModelKind::Room, 1.0, 2);
        run(&mut m, 10.0, 1.0, 3, &Faults::default());
        let stuck = Faults {
            stuck: true,
            ..Faults::default()
        };
        let before = m.value("temperature").unwrap().0;
        run(&mut m, 18.0, 6.0, 3, &stuck);
        assert_eq!(m.value("temperature").unwrap().0, before);
        // The room's true temperature moved on.
        assert!((m.temp - before).abs() > 1.0);
    }

    #[test]
    fn a_clogging_filter_raises_pressure_drop_and_fan_power() {
        let mut m = Model::new(ModelKind::Ahu, 1.0, 3);
        run(&mut m, 7.0, 1.0, 1, &Faults::default());
        let (clean, _) = m.value("filter_dp").unwrap();
        let (p_clean, _) = m.value("fan_power").unwrap();
        let clog = Faults {
            clog: Some((1.0, 450.0)),
            ..Faults::default()
        };
        run(&mut m, 8.0, 1.0, 1, &clog);
        let (dirty, unit) = m.value("filter_dp").unwrap();
        assert_eq!(unit, Unit::Pa);
        assert!(clean < 140.0 && dirty > 420.0, "{clean} {dirty}");
        assert!(m.value("fan_power").unwrap().0 > p_clean * 1.3);
    }

    #[test]
    fn the_ahu_runs_on_weekdays_only_and_counts_starts() {
        let mut m = Model::new(ModelKind::Ahu, 1.0, 4);
        run(&mut m, 10.0, 0.5, 6, &Faults::default());
        assert_eq!(m.value("fan_status").unwrap().0, 0.0);
        run(&mut m, 10.0, 0.5, 2, &Faults::default());
        assert_eq!(m.value("fan_status").unwrap().0, 1.0);
        assert_eq!(m.value("fan_starts").unwrap().0, 1.0);
    }

    #[test]
    fn counters_only_grow_and_integrate_power() {
        let mut m = Model::new(ModelKind::Meter, 1.0, 5);
        let e0 = m.value("energy_total").unwrap().0;
        run(&mut m, 0.0, 24.0, 2, &Faults::default());
        let e1 = m.value("energy_total").unwrap().0;
        // Between the night base load (15 kW) and the day peak (~70 kW) for 24 h.
        assert!(
            e1 - e0 > 15.0 * 24.0 && e1 - e0 < 70.0 * 24.0,
            "{}",
            e1 - e0
        );
    }
}
