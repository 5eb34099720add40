//! The closed vocabularies of device profiles: units, point kinds and device categories.
//!
//! Free-text units are how EdgeX profiles end up with `degC`, `DegC` and `°C` for one quantity. Ours are a closed
//! set checked at load time, with a "did you mean" hint for typos.

use std::fmt;

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every spelling accepted in files, in declaration order.
            pub const ALL: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// A point's unit.
    Unit {
        DegC => "degC",
        DegF => "degF",
        Kelvin => "K",
        Percent => "percent",
        W => "W",
        KW => "kW",
        MW => "MW",
        Wh => "Wh",
        KWh => "kWh",
        MWh => "MWh",
        GJ => "GJ",
        VA => "VA",
        KVA => "kVA",
        Var => "var",
        KVar => "kvar",
        KVarh => "kvarh",
        V => "V",
        A => "A",
        Hz => "Hz",
        PowerFactor => "pf",
        M3 => "m3",
        L => "l",
        M3PerH => "m3/h",
        LPerMin => "l/min",
        LPerS => "l/s",
        Pa => "Pa",
        KPa => "kPa",
        Bar => "bar",
        Ppm => "ppm",
        Ppb => "ppb",
        UgPerM3 => "ug/m3",
        Lux => "lux",
        Db => "dB",
        Bool => "bool",
        Count => "count",
        Seconds => "s",
        Hours => "h",
        Rpm => "rpm",
        DegreesAngle => "deg",
        MPerS => "m/s",
        Dbm => "dBm",
        // US customary units (NIST SP 811 Appendix B.8/B.9 and NIST Handbook 44 Appendix C give the factors
        // in `to_base`); stored in the canonical unit of their dimension like every other unit.
        Gal => "gal",
        Ft3 => "ft3",
        Ccf => "ccf",
        Therm => "therm",
        Btu => "BTU",
        KBtu => "kBTU",
        MMBtu => "MMBtu",
        BtuPerH => "BTU/h",
        KBtuPerH => "kBTU/h",
        TonRefrigeration => "TR",
        Cfm => "CFM",
        Gpm => "gpm",
        InH2O => "inH2O",
        Psi => "psi",
        FtPerMin => "ft/min",
        None => "none",
    }
}

impl Unit {
    /// The physical dimension, used to check that a rule's unit matches its point's (kW vs W is fine, degC vs
    /// percent is not).
    pub fn dimension(self) -> &'static str {
        use Unit::*;
        match self {
            DegC | DegF | Kelvin => "temperature",
            Percent => "ratio",
            W | KW | MW | BtuPerH | KBtuPerH | TonRefrigeration => "power",
            Wh | KWh | MWh | GJ | Therm | Btu | KBtu | MMBtu => "energy",
            VA | KVA => "apparent_power",
            Var | KVar => "reactive_power",
            KVarh => "reactive_energy",
            V => "voltage",
            A => "current",
            Hz => "frequency",
            PowerFactor => "power_factor",
            M3 | L | Gal | Ft3 | Ccf => "volume",
            M3PerH | LPerMin | LPerS | Cfm | Gpm => "flow",
            Pa | KPa | Bar | InH2O | Psi => "pressure",
            Ppm | Ppb | UgPerM3 => "concentration",
            Lux => "illuminance",
            Db => "sound",
            Bool => "bool",
            Count => "count",
            Seconds | Hours => "time",
            Rpm => "speed",
            DegreesAngle => "angle",
            MPerS | FtPerMin => "velocity",
            Dbm => "signal",
            None => "none",
        }
    }

    /// The unit a point of this unit is stored and processed in: one unit per dimension for the quantities
    /// dashboards add up across devices (power W, apparent power VA, reactive power var, energy kWh, volume m3,
    /// flow m3/h, pressure Pa), so `energy_total` means kWh whether the device sends Wh (Shelly) or kWh
    /// (Tasmota). Other units are kept as written: temperatures (`K` marks a temperature difference, which
    /// must not become degC), time (run hours stay hours), and the dimensionless ones.
    pub fn canonical(self) -> Unit {
        use Unit::*;
        match self.dimension() {
            "power" => W,
            "apparent_power" => VA,
            "reactive_power" => Var,
            "energy" => KWh,
            "volume" => M3,
            "flow" => M3PerH,
            "pressure" => Pa,
            _ => self,
        }
    }

    /// `v` (in this unit) in `to`: `v * f + o` with [`unit_conversion`]'s factor and offset, and `v` itself when
    /// the units are the same; `None` when they do not convert. The simulator's model values into a profile's
    /// units, and outdoor temperatures into degC for degree days.
    pub fn convert_to(self, v: f64, to: Unit) -> Option<f64> {
        if self == to {
            return Some(v);
        }
        let (f, o) = unit_conversion(self, to)?;
        Some(v * f + o)
    }

    /// Factor and offset into the base unit of the unit's [`dimension`](Unit::dimension)
    /// (`base = v * factor + offset`); `None`: no conversion known (only the same unit is accepted).
    fn to_base(self) -> Option<(f64, f64)> {
        use Unit::*;
        Some(match self {
            DegC => (1.0, 0.0),
            Kelvin => (1.0, -273.15),
            DegF => (5.0 / 9.0, -32.0 * 5.0 / 9.0),
            W => (1.0, 0.0),
            KW => (1e3, 0.0),
            MW => (1e6, 0.0),
            Wh => (1.0, 0.0),
            KWh => (1e3, 0.0),
            MWh => (1e6, 0.0),
            GJ => (1e9 / 3600.0, 0.0),
            VA => (1.0, 0.0),
            KVA => (1e3, 0.0),
            Var => (1.0, 0.0),
            KVar => (1e3, 0.0),
            L => (1.0, 0.0),
            M3 => (1e3, 0.0),
            LPerS => (60.0, 0.0),
            LPerMin => (1.0, 0.0),
            M3PerH => (1000.0 / 60.0, 0.0),
            Pa => (1.0, 0.0),
            KPa => (1e3, 0.0),
            Bar => (1e5, 0.0),
            Seconds => (1.0, 0.0),
            Hours => (3600.0, 0.0),
            // US customary. Exact by definition: gal = 231 in3 = 3.785411784 l; ft = 0.3048 m, so
            // ft3 = 28.316846592 l; ccf = 100 ft3; in = 0.0254 m.
            Gal => (3.785_411_784, 0.0),
            Ft3 => (28.316_846_592, 0.0),
            Ccf => (2_831.684_659_2, 0.0),
            Gpm => (3.785_411_784, 0.0),
            Cfm => (28.316_846_592, 0.0),
            // Btu (International Table) = 1055.055 852 62 J (NIST SP 811 B.8); base Wh = J / 3600.
            Btu => (1_055.055_852_62 / 3600.0, 0.0),
            KBtu => (1_055_055.852_62 / 3600.0, 0.0),
            MMBtu => (1_055_055_852.62 / 3600.0, 0.0),
            // therm (U.S.) = 1.054 804 E+08 J (NIST SP 811 B.8).
            Therm => (1.054_804e8 / 3600.0, 0.0),
            BtuPerH => (1_055.055_852_62 / 3600.0, 0.0),
            KBtuPerH => (1_055_055.852_62 / 3600.0, 0.0),
            // ton of refrigeration = 12 000 Btu_IT/h = 3.516 853 E+03 W (NIST SP 811 B.8).
            TonRefrigeration => (12_000.0 * 1_055.055_852_62 / 3600.0, 0.0),
            // inch of water, conventional = 2.490 889 E+02 Pa; psi (lbf/in2) = 6.894 757 E+03 Pa
            // (6894.757 293 168 from lbf = 4.448 221 615 260 5 N exactly) (NIST SP 811 B.8).
            InH2O => (249.088_9, 0.0),
            Psi => (6_894.757_293_168, 0.0),
            MPerS => (1.0, 0.0),
            FtPerMin => (0.00508, 0.0),
            _ => return Option::None,
        })
    }
}

/// The unit an engineering-unit text from the field names (Sparkplug's `engUnit` property, a BMS export), or
/// `None` when it is not one we know. Our own spellings first (`degC`, `kWh`), then the common others,
/// case-insensitively (`°C`, `C`, `%`, `m³/h`, `lx`, `RPM`, `hr`).
pub fn from_engineering(text: &str) -> Option<Unit> {
    let t = text.trim();
    if let Some(u) = Unit::parse(t) {
        return Some(u);
    }
    let lower = t.to_lowercase();
    let u = match lower.as_str() {
        "°c" | "c" | "degc" | "deg c" | "deg_c" | "celsius" | "cel" | "℃" => Unit::DegC,
        "°f" | "f" | "degf" | "deg f" | "deg_f" | "fahrenheit" | "℉" => Unit::DegF,
        "k" | "kelvin" => Unit::Kelvin,
        "%" | "pct" | "percent" | "%rh" | "% rh" => Unit::Percent,
        "w" | "watt" | "watts" => Unit::W,
        "kw" => Unit::KW,
        "mw" => Unit::MW,
        "wh" => Unit::Wh,
        "kwh" => Unit::KWh,
        "mwh" => Unit::MWh,
        "gj" => Unit::GJ,
        "va" => Unit::VA,
        "kva" => Unit::KVA,
        "var" => Unit::Var,
        "kvar" => Unit::KVar,
        "kvarh" => Unit::KVarh,
        "v" | "volt" | "volts" => Unit::V,
        "a" | "amp" | "amps" | "ampere" => Unit::A,
        "hz" => Unit::Hz,
        "pf" => Unit::PowerFactor,
        "m3" | "m³" | "m^3" => Unit::M3,
        "l" | "liter" | "litre" | "liters" | "litres" => Unit::L,
        "m3/h" | "m³/h" | "m^3/h" | "m3/hr" | "m³/hr" | "cmh" => Unit::M3PerH,
        "l/min" | "lpm" => Unit::LPerMin,
        "l/s" | "lps" => Unit::LPerS,
        "pa" => Unit::Pa,
        "kpa" => Unit::KPa,
        "bar" => Unit::Bar,
        "ppm" => Unit::Ppm,
        "ppb" => Unit::Ppb,
        "ug/m3" | "µg/m³" | "µg/m3" | "ug/m³" => Unit::UgPerM3,
        "lx" | "lux" => Unit::Lux,
        "db" | "dba" | "db(a)" => Unit::Db,
        "s" | "sec" | "secs" | "seconds" => Unit::Seconds,
        "h" | "hr" | "hrs" | "hours" => Unit::Hours,
        "rpm" | "1/min" => Unit::Rpm,
        "deg" | "°" | "degrees" => Unit::DegreesAngle,
        "m/s" => Unit::MPerS,
        "dbm" => Unit::Dbm,
        _ => return None,
    };
    Some(u)
}

/// Factor and offset turning a value in `from` into `to` (`v * f + o`); `None` if they are not convertible
/// (different dimensions, or a unit without a known conversion). Used for rule thresholds written in another
/// unit than their point's, and the energy store's base units; [`Unit::convert_to`] converts one value.
pub fn unit_conversion(from: Unit, to: Unit) -> Option<(f64, f64)> {
    if from == to {
        return Some((1.0, 0.0));
    }
    if from.dimension() != to.dimension() {
        return None;
    }
    let (ff, of) = from.to_base()?;
    let (ft, ot) = to.to_base()?;
    // base = v*ff + of; to = (base - ot) / ft
    Some((ff / ft, (of - ot) / ft))
}

vocabulary! {
    /// Whether a point is a level (temperature, power) or a running total (kWh, m3).
    Kind {
        Gauge => "gauge",
        Counter => "counter",
    }
}

vocabulary! {
    /// What a device is for; the InfluxDB measurement name and the energy grouping.
    Category {
        Electricity => "electricity",
        Water => "water",
        Heat => "heat",
        Hvac => "hvac",
        Lighting => "lighting",
        Environment => "environment",
        Gas => "gas",
        Other => "other",
    }
}

/// Parses a vocabulary word or explains what was expected, with a typo hint.
pub fn parse_word<T>(
    what: &str,
    text: &str,
    parse: impl Fn(&str) -> Option<T>,
    all: &'static [&'static str],
) -> Result<T, String> {
    parse(text).ok_or_else(|| {
        let hint = crate::util::did_you_mean(text, all.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        format!(
            "unknown {what} `{text}`{hint}; expected one of: {}",
            all.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engineering_units_from_the_field() {
        for (text, u) in [
            ("degC", Unit::DegC),
            ("°C", Unit::DegC),
            (" C ", Unit::DegC),
            ("°F", Unit::DegF),
            ("%", Unit::Percent),
            ("KW", Unit::KW),
            ("Wh", Unit::Wh),
            ("m³/h", Unit::M3PerH),
            ("RPM", Unit::Rpm),
            ("hr", Unit::Hours),
        ] {
            assert_eq!(from_engineering(text), Some(u), "{text}");
        }
        assert_eq!(from_engineering("furlongs"), None);
        // Wh is stored as kWh, its canonical unit.
        assert_eq!(from_engineering("Wh").map(Unit::canonical), Some(Unit::KWh));
    }

    #[test]
    fn every_word_round_trips() {
        for w in Unit::ALL {
            assert_eq!(Unit::parse(w).unwrap().as_str(), *w);
        }
        for w in Category::ALL {
            assert_eq!(Category::parse(w).unwrap().as_str(), *w);
        }
    }

    #[test]
    fn typo_gets_a_hint() {
        let e = parse_word("unit", "degc", Unit::parse, Unit::ALL).unwrap_err();
        assert!(e.contains("did you mean `degC`"), "{e}");
    }

    #[test]
    fn units_convert_within_a_dimension_only() {
        assert_eq!(Unit::KWh.convert_to(1.5, Unit::Wh), Some(1500.0));
        assert!((Unit::DegC.convert_to(20.0, Unit::DegF).unwrap() - 68.0).abs() < 1e-9);
        assert_eq!(Unit::KWh.convert_to(1.0, Unit::W), None);
        assert!((Unit::M3PerH.convert_to(1.0, Unit::LPerMin).unwrap() - 16.666_666).abs() < 1e-3);
    }

    #[test]
    fn conversions_the_simulator_and_the_energy_module_rely_on() {
        let near = |v: Option<f64>, want: f64| v.is_some_and(|v| (v - want).abs() < 1e-9);
        // Temperatures into degC (degree days), and back out (simulated devices in degF or K).
        assert!(near(Unit::DegF.convert_to(212.0, Unit::DegC), 100.0));
        assert!(near(Unit::DegF.convert_to(32.0, Unit::DegC), 0.0));
        assert!(near(Unit::DegF.convert_to(-40.0, Unit::DegC), -40.0));
        assert_eq!(
            Unit::Kelvin.convert_to(300.0, Unit::DegC),
            Some(300.0 - 273.15)
        );
        assert_eq!(Unit::DegC.convert_to(21.5, Unit::DegC), Some(21.5));
        assert!(near(Unit::DegC.convert_to(20.0, Unit::DegF), 68.0));
        assert!(near(Unit::DegC.convert_to(20.0, Unit::Kelvin), 293.15));
        // Energy, power and volume.
        assert_eq!(Unit::KWh.convert_to(1.5, Unit::Wh), Some(1500.0));
        assert_eq!(Unit::Wh.convert_to(1500.0, Unit::KWh), Some(1.5));
        assert_eq!(Unit::MWh.convert_to(2.0, Unit::KWh), Some(2000.0));
        assert!(near(Unit::GJ.convert_to(3.6, Unit::KWh), 1000.0));
        assert_eq!(Unit::KW.convert_to(2.5, Unit::W), Some(2500.0));
        assert_eq!(Unit::M3.convert_to(1.25, Unit::L), Some(1250.0));
        assert_eq!(Unit::L.convert_to(1250.0, Unit::M3), Some(1.25));
        assert!(near(
            Unit::M3PerH.convert_to(1.0, Unit::LPerMin),
            1000.0 / 60.0
        ));
        assert!(near(Unit::LPerS.convert_to(1.0, Unit::M3PerH), 3.6));
        assert_eq!(Unit::Bar.convert_to(1.0, Unit::KPa), Some(100.0));
        assert_eq!(Unit::Hours.convert_to(2.0, Unit::Seconds), Some(7200.0));
        // Different dimensions, or no known conversion.
        assert_eq!(Unit::KWh.convert_to(1.0, Unit::W), None);
        assert_eq!(Unit::DegC.convert_to(1.0, Unit::Percent), None);
        assert_eq!(Unit::Ppm.convert_to(1.0, Unit::Ppb), None);
        // Unknown conversions still pass a value through unchanged in its own unit.
        assert_eq!(Unit::Ppm.convert_to(400.0, Unit::Ppm), Some(400.0));
    }

    #[test]
    fn canonical_units_convert_from_every_unit_of_their_dimension() {
        for w in Unit::ALL {
            let u = Unit::parse(w).unwrap();
            let c = u.canonical();
            assert_eq!(c.dimension(), u.dimension(), "{w}");
            assert_eq!(c.canonical(), c, "{w}: canonical is a fixed point");
            assert!(unit_conversion(u, c).is_some(), "{w} → {c}");
        }
        assert_eq!(Unit::Wh.canonical(), Unit::KWh);
        assert_eq!(Unit::Kelvin.canonical(), Unit::Kelvin);
        assert_eq!(Unit::KW.canonical(), Unit::W);
    }

    #[test]
    fn us_customary_units_convert_by_nist_factors() {
        let near = |v: Option<f64>, want: f64, tol: f64| v.is_some_and(|v| (v - want).abs() <= tol);
        // Reference values: NIST SP 811 (2008) Appendix B.8 and NIST Handbook 44 Appendix C.
        assert!(near(
            Unit::Gal.convert_to(1.0, Unit::L),
            3.785_411_784,
            1e-12
        ));
        assert!(near(
            Unit::Gal.convert_to(1.0, Unit::M3),
            3.785_412e-3,
            1e-9
        ));
        assert!(near(
            Unit::Ft3.convert_to(1.0, Unit::M3),
            2.831_685e-2,
            1e-8
        ));
        assert!(near(Unit::Ccf.convert_to(1.0, Unit::Ft3), 100.0, 1e-9));
        assert!(near(
            Unit::Therm.convert_to(1.0, Unit::KWh),
            29.300_11,
            1e-4
        ));
        assert!(near(
            Unit::Therm.convert_to(1.0, Unit::GJ),
            0.105_480_4,
            1e-9
        ));
        assert!(near(Unit::Btu.convert_to(1.0, Unit::Wh), 0.293_071_1, 1e-6));
        assert!(near(Unit::KBtu.convert_to(3.412_142, Unit::KWh), 1.0, 1e-6));
        assert!(near(Unit::MMBtu.convert_to(1.0, Unit::Btu), 1e6, 1e-6));
        assert!(near(
            Unit::BtuPerH.convert_to(1.0, Unit::W),
            0.293_071_1,
            1e-6
        ));
        assert!(near(
            Unit::TonRefrigeration.convert_to(1.0, Unit::W),
            3_516.853,
            1e-3
        ));
        assert!(near(
            Unit::TonRefrigeration.convert_to(1.0, Unit::KBtuPerH),
            12.0,
            1e-9
        ));
        assert!(near(
            Unit::Cfm.convert_to(1.0, Unit::M3PerH),
            1.699_011,
            1e-6
        ));
        assert!(near(
            Unit::Gpm.convert_to(1.0, Unit::LPerMin),
            3.785_411_784,
            1e-12
        ));
        assert!(near(Unit::InH2O.convert_to(1.0, Unit::Pa), 249.088_9, 1e-9));
        assert!(near(Unit::Psi.convert_to(1.0, Unit::KPa), 6.894_757, 1e-6));
        assert!(near(
            Unit::FtPerMin.convert_to(196.850_4, Unit::MPerS),
            1.0,
            1e-6
        ));
        // Each is stored in its dimension's canonical unit.
        for (u, c) in [
            (Unit::Gal, Unit::M3),
            (Unit::Ft3, Unit::M3),
            (Unit::Ccf, Unit::M3),
            (Unit::Therm, Unit::KWh),
            (Unit::Btu, Unit::KWh),
            (Unit::KBtu, Unit::KWh),
            (Unit::BtuPerH, Unit::W),
            (Unit::TonRefrigeration, Unit::W),
            (Unit::Cfm, Unit::M3PerH),
            (Unit::Gpm, Unit::M3PerH),
            (Unit::InH2O, Unit::Pa),
            (Unit::Psi, Unit::Pa),
        ] {
            assert_eq!(u.canonical(), c, "{u}");
        }
        assert_eq!(Unit::Therm.convert_to(1.0, Unit::Gal), None);
    }

    #[test]
    fn required_units_exist() {
        for u in [
            "degC", "percent", "W", "kW", "kWh", "V", "A", "Hz", "m3", "m3/h", "l/min", "Pa",
            "ppm", "lux", "bool", "count",
        ] {
            assert!(Unit::parse(u).is_some(), "{u}");
        }
    }
}
