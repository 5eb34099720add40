//! Simulated Modbus TCP devices: one tokio-modbus server per port (a gateway), serving every unit id behind it
//! from a register bank the simulation rewrites as the physics moves.
//!
//! Behaviour a poller meets on real sites: addresses no point maps read as 0 (most devices; it lets a planner
//! merge across gaps); a unit id nobody answers for gets exception 0x0B (gateway target failed to respond); an
//! offline device (scripted fault) does not answer at all, so the client's timeout fires; writes are refused
//! with IllegalFunction (the simulator is read-only).

use super::encode::{point_value, registers, to_raw};
use super::model::Model;
use crate::catalog::Profile;
use crate::catalog::modbus_binding::Table;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio_modbus::prelude::*;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_util::sync::CancellationToken;

/// The four Modbus tables of one unit, plus whether it answers.
#[derive(Debug, Default, Clone)]
pub struct Bank {
    pub holding: HashMap<u16, u16>,
    pub input: HashMap<u16, u16>,
    pub coils: HashMap<u16, bool>,
    pub discrete: HashMap<u16, bool>,
    pub offline: bool,
}

impl Bank {
    /// Lays out a model's current values by a profile's `modbus:` bindings.
    pub fn from_model(profile: &Profile, model: &Model, text: &str, offline: bool) -> Bank {
        let mut b = Bank {
            offline,
            ..Bank::default()
        };
        for p in &profile.points {
            let Some(mb) = &p.modbus else { continue };
            let v = point_value(model, p).unwrap_or(0.0);
            let raw = to_raw(p, v);
            match mb.table {
                Table::Coil => {
                    b.coils.insert(mb.address, raw != 0.0);
                }
                Table::Discrete => {
                    b.discrete.insert(mb.address, raw != 0.0);
                }
                Table::Holding | Table::Input => {
                    let regs = if mb.table == Table::Holding {
                        &mut b.holding
                    } else {
                        &mut b.input
                    };
                    if let Some(bit) = mb.bit {
                        let r = regs.entry(mb.address).or_insert(0);
                        if raw != 0.0 {
                            *r |= 1 << bit;
                        } else {
                            *r &= !(1 << bit);
                        }
                    } else {
                        for (i, w) in registers(mb, raw, text).into_iter().enumerate() {
                            regs.insert(mb.address.wrapping_add(i as u16), w);
                        }
                    }
                }
            }
        }
        b
    }
}

pub type Units = Arc<HashMap<u8, Arc<RwLock<Bank>>>>;

/// The service behind one port.
#[derive(Clone)]
struct Gateway {
    units: Units,
}

impl Gateway {
    fn handle(&self, req: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        let Some(bank) = self.units.get(&req.slave) else {
            return Err(ExceptionCode::GatewayTargetDevice);
        };
        let bank = bank.read().unwrap_or_else(|e| e.into_inner());
        if bank.offline {
            return Ok(None);
        }
        let range = |a: u16, n: u16, max: u16| -> Result<std::ops::Range<u32>, ExceptionCode> {
            if n == 0 || n > max {
                return Err(ExceptionCode::IllegalDataValue);
            }
            let end = a as u32 + n as u32;
            if end > 65536 {
                return Err(ExceptionCode::IllegalDataAddress);
            }
            Ok(a as u32..end)
        };
        let words = |m: &HashMap<u16, u16>, a, n| {
            range(a, n, 125).map(|r| {
                r.map(|x| m.get(&(x as u16)).copied().unwrap_or(0))
                    .collect()
            })
        };
        let bits = |m: &HashMap<u16, bool>, a, n| {
            range(a, n, 2000).map(|r| {
                r.map(|x| m.get(&(x as u16)).copied().unwrap_or(false))
                    .collect()
            })
        };
        Ok(Some(match req.request {
            Request::ReadHoldingRegisters(a, n) => {
                Response::ReadHoldingRegisters(words(&bank.holding, a, n)?)
            }
            Request::ReadInputRegisters(a, n) => {
                Response::ReadInputRegisters(words(&bank.input, a, n)?)
            }
            Request::ReadCoils(a, n) => Response::ReadCoils(bits(&bank.coils, a, n)?),
            Request::ReadDiscreteInputs(a, n) => {
                Response::ReadDiscreteInputs(bits(&bank.discrete, a, n)?)
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        }))
    }
}

impl tokio_modbus::server::Service for Gateway {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(self.handle(req))
    }
}

/// Binds a port for the given units; returns the bound address (port 0 binds a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves the units on a bound listener until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, units: Units, shutdown: CancellationToken) {
    let gw = Gateway { units };
    let server = Server::new(listener);
    let on_connected = move |stream, addr| {
        let gw = gw.clone();
        async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(gw.clone()))) }
    };
    let on_error =
        |e: std::io::Error| tracing::debug!(error = %e, "simulated Modbus connection ended");
    if let Err(e) = server
        .serve_until(&on_connected, on_error, shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "simulated Modbus server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::profile::parse_profile;
    use crate::demo::simulate::model::Env;
    use crate::demo::simulate::site::ModelKind;

    const AHU: &str = r#"
schema: 1
name: test-ahu
category: hvac
points:
  - { name: supply_air_temp, unit: degC, kind: gauge, scale: 0.1, modbus: { table: input, address: 0, type: i16 } }
  - { name: filter_dp, unit: Pa, kind: gauge, modbus: { table: holding, address: 10, type: f32, order: CDAB } }
  - { name: fan_power, unit: W, kind: gauge, modbus: { table: holding, address: 12, type: u32, order: DCBA } }
  - { name: energy_total, unit: Wh, kind: counter, modbus: { table: holding, address: 20, type: u64, order: BADC } }
  - { name: fan_status, unit: bool, kind: gauge, modbus: { table: holding, address: 30, type: bool, bit: 3 } }
  - { name: valve_position, unit: percent, kind: gauge, modbus: { table: holding, address: 30, type: bool, bit: 4 } }
  - { name: running, unit: bool, kind: gauge, modbus: { table: coil, address: 5 } }
"#;

    fn decode_f32_cdab(r: &[u16]) -> f32 {
        f32::from_bits(((r[1] as u32) << 16) | r[0] as u32)
    }

    /// Serves a test profile's registers over real TCP and reads them back with tokio-modbus's client, decoding
    /// each type and word order independently of the encoder.
    #[tokio::test]
    async fn registers_served_over_tcp_decode_to_the_model_values() {
        let profile = parse_profile(std::path::Path::new("test-ahu.yaml"), AHU)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let mut m = Model::new(ModelKind::Ahu, 1.0, 9);
        let env = Env {
            hour: 10.0,
            weekday: 2,
            outdoor: 2.0,
            dt: 60.0,
        };
        for _ in 0..30 {
            m.step(&env, &Default::default());
        }
        let bank = Bank::from_model(&profile, &m, "", false);
        let units: Units = Arc::new(HashMap::from([(7u8, Arc::new(RwLock::new(bank)))]));
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, units.clone(), stop.clone()));

        let mut ctx = tokio_modbus::client::tcp::connect_slave(addr, Slave(7))
            .await
            .unwrap();
        let supply = ctx.read_input_registers(0, 1).await.unwrap().unwrap();
        let want = m.value("supply_air_temp").unwrap().0;
        assert!(
            ((supply[0] as i16) as f64 * 0.1 - want).abs() < 0.051,
            "{supply:?} {want}"
        );
        let regs = ctx.read_holding_registers(10, 21).await.unwrap().unwrap();
        let dp = decode_f32_cdab(&regs[0..2]) as f64;
        assert!((dp - m.value("filter_dp").unwrap().0).abs() < 0.01, "{dp}");
        // DCBA: the 32-bit value little-endian: bytes of regs[2..4] reversed.
        let b = [regs[2].to_be_bytes(), regs[3].to_be_bytes()].concat();
        let power = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64;
        assert!(
            (power - (m.value("fan_power").unwrap().0 * 1000.0)).abs() <= 0.5,
            "{power}"
        );
        // BADC: bytes swapped inside each word, words in order.
        let mut e = [0u8; 8];
        for (i, w) in regs[10..14].iter().enumerate() {
            let [hi, lo] = w.to_be_bytes();
            e[i * 2] = lo;
            e[i * 2 + 1] = hi;
        }
        let wh = u64::from_be_bytes(e) as f64;
        assert!(
            (wh - m.value("energy_total").unwrap().0 * 1000.0).abs() <= 0.5,
            "{wh}"
        );
        // Two bools share register 30: bit 3 (fan on) set, bit 4 (valve position 0..100 as bool) per value.
        assert_eq!(regs[20] & (1 << 3), 1 << 3);
        let coils = ctx.read_coils(5, 1).await.unwrap().unwrap();
        assert_eq!(coils, vec![true]);
        // Unmapped addresses read 0; an unknown unit is a gateway exception.
        assert_eq!(
            ctx.read_holding_registers(200, 2).await.unwrap().unwrap(),
            vec![0, 0]
        );
        ctx.set_slave(Slave(8));
        assert_eq!(
            ctx.read_holding_registers(10, 2).await.unwrap(),
            Err(ExceptionCode::GatewayTargetDevice)
        );
        // Offline: no answer at all.
        units[&7].write().unwrap().offline = true;
        ctx.set_slave(Slave(7));
        let r = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            ctx.read_holding_registers(10, 2),
        )
        .await;
        assert!(r.is_err(), "an offline device answered: {r:?}");
        stop.cancel();
        let _ = task.await;
    }
}
