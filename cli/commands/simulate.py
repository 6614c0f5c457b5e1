"""`asset-cycle simulate`: generate a site bundle (telemetry, regions, assets, ground truth)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from tqdm import tqdm

from cli.errors import CliError
from workbench.bundle import iso_to_ms
from workbench.simulator import DEGRADED_PRESET, SCENARIO_FAMILIES, SimulationSpec, write_simulation


def _frac(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1]")
    return value


def _nonneg(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `simulate` sub-command."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate a haul fleet and write a site bundle with ground truth",
        description="Simulate open-pit haul trucks (deterministic for a seed) and write a bundle directory: "
        "telemetry.jsonl (delivery order), regions.geojson, assets.csv, truth_cycles.csv.",
    )
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--trucks", type=int, default=5, help="haul trucks per site (default 5)")
    p.add_argument("--loaders", type=int, default=None, help="loaders per site (default: trucks/5)")
    p.add_argument("--dumps", type=int, default=None, help="dump regions per site (default: trucks/15, >= 2)")
    p.add_argument("--hours", type=float, default=2.0, help="simulated hours (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same bundle (default 0)")
    p.add_argument("--sites", type=int, default=None, help="number of sites (default 1, or the scenario's)")
    p.add_argument("--site-spacing-km", type=float, default=60.0, help="distance between site centres")
    p.add_argument("--start", default=None, help="start time, ISO 8601 UTC (default 2024-01-15T06:00:00Z)")
    p.add_argument("--center", default=None, metavar="LAT,LON", help="first site centre (default -22.7,118.7)")
    p.add_argument("--no-restricted", action="store_true", help="do not add a restricted region")
    p.add_argument("--ping-interval", type=float, nargs=2, metavar=("MIN_S", "MAX_S"), default=None,
                   help="range of per-truck ping intervals (default 10 30)")
    p.add_argument("--sparse-idle", action="store_true", default=None,
                   help="devices ping only every 60-120 s while standing")
    pit = p.add_argument_group("pit, trucks and devices (see the scenario families: --scenario)")
    pit.add_argument("--scenario", choices=list(SCENARIO_FAMILIES), default=None,
                     help="start from a named scenario family (options given here override it)")
    pit.add_argument("--layout", choices=("radial", "pit"), default=None,
                     help="radial: loader and dump clusters around a hub (faces 250 m to km apart); pit: one open "
                          "pit with a ramp, faces along a bench road that passes every loader")
    pit.add_argument("--ramp", choices=("switchback", "spiral"), default=None,
                     help="pit layout: switchback ramp (hairpins, legs 25-40 m apart) or spiral ramp")
    pit.add_argument("--face-spacing", type=float, nargs=2, metavar=("MIN_M", "MAX_M"), default=None,
                     help="pit layout: distance between neighbouring faces (default 150 300)")
    pit.add_argument("--loaded-ramp-speed", type=float, nargs=2, metavar=("MIN", "MAX"), default=None,
                     help="loaded speed on the ramp in m/s (default 2.5 5)")
    pit.add_argument("--empty-ramp-speed", type=float, nargs=2, metavar=("MIN", "MAX"), default=None,
                     help="empty speed on the ramp in m/s (default 6 12)")
    pit.add_argument("--queue-inside", type=_frac, default=None, metavar="P",
                     help="probability that a loader's queue is inside its 50 m circle (default 0.5)")
    pit.add_argument("--device", choices=("interval", "on_change"), default=None,
                     help="interval: a ping every ping interval; on_change: a row about every second while "
                          "moving and every 1-3 min while standing, work state from speed")
    pit.add_argument("--gps-sigma", type=_nonneg, default=None, metavar="M", help="GPS noise in metres (default 3)")
    g = p.add_argument_group("degradations (all off by default)")
    g.add_argument("--degraded", action="store_true",
                   help="realistic mix: " + ", ".join(f"{k}={v}" for k, v in DEGRADED_PRESET.items())
                   + " (explicit options override)")
    g.add_argument("--duplicates", type=_frac, help="fraction of pings sent twice (copy 0-40 s later)")
    g.add_argument("--disorder-s", type=_nonneg, help="random delivery delay 0..X s (keep <= 45)")
    g.add_argument("--drop", type=_frac, help="fraction of lost pings")
    g.add_argument("--outages", type=_nonneg, help="connectivity outages (5-30 min) per device per day")
    g.add_argument("--outage-loss", action="store_true", help="lose outage pings instead of store-and-forward")
    g.add_argument("--long-idles", type=_frac, help="probability per haul of an 11-20 min stop (OUTLIER)")
    g.add_argument("--bad-dumps", type=_frac, help="probability per cycle of dumping off-region (INVALID)")
    g.add_argument("--non-trucks", type=int, help="water trucks/dozers per site (loaders then report too)")
    g.add_argument("--malformed", type=_frac, help="fraction of extra malformed lines")
    g.add_argument("--unknown-assets", type=int, help="assets per site sending telemetry but not in assets.csv")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: on for large runs)")
    p.set_defaults(func=run)


def spec_from_args(args: argparse.Namespace) -> SimulationSpec:
    """The SimulationSpec described by parsed `simulate` arguments."""
    kwargs: dict = dict(SCENARIO_FAMILIES[args.scenario]) if args.scenario else {}
    kwargs |= {
        "trucks": args.trucks, "loaders": args.loaders if args.loaders is not None else kwargs.get("loaders"),
        "dumps": args.dumps, "hours": args.hours, "seed": args.seed,
        "sites": args.sites if args.sites is not None else kwargs.get("sites", 1),
        "site_spacing_km": args.site_spacing_km, "restricted_region": not args.no_restricted,
        "sparse_idle": bool(args.sparse_idle or kwargs.get("sparse_idle")),
    }
    if args.start:
        try:
            kwargs["start_ms"] = iso_to_ms(args.start)
        except ValueError:
            raise CliError(f"--start {args.start!r} is not an ISO 8601 time") from None
    if args.center:
        try:
            lat, lon = (float(v) for v in args.center.split(","))
        except ValueError:
            raise CliError(f"--center {args.center!r} must be LAT,LON") from None
        kwargs["center_lat"], kwargs["center_lon"] = lat, lon
    if args.ping_interval:
        kwargs["ping_interval_s"] = tuple(args.ping_interval)
    for opt, name in (("layout", "layout"), ("ramp", "ramp"), ("queue_inside", "queue_inside_p"),
                      ("device", "device"), ("gps_sigma", "gps_sigma_m")):
        if getattr(args, opt) is not None:
            kwargs[name] = getattr(args, opt)
    for opt, name in (("face_spacing", "face_spacing_m"), ("loaded_ramp_speed", "loaded_ramp_mps"),
                      ("empty_ramp_speed", "empty_ramp_mps")):
        if getattr(args, opt) is not None:
            kwargs[name] = tuple(getattr(args, opt))
    if args.degraded:
        kwargs.update(DEGRADED_PRESET)
    for opt, name in (("duplicates", "duplicates"), ("disorder_s", "disorder_s"), ("drop", "drop"),
                      ("outages", "outages_per_day"), ("long_idles", "long_idles"), ("bad_dumps", "bad_dumps"),
                      ("non_trucks", "non_trucks"), ("malformed", "malformed"),
                      ("unknown_assets", "unknown_assets")):
        value = getattr(args, opt)
        if value is not None:
            kwargs[name] = value
    if args.outage_loss:
        kwargs["outage_loss"] = True
    try:
        spec = SimulationSpec(**kwargs)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return replace(spec)


def run(args: argparse.Namespace) -> int:
    """Handler of `asset-cycle simulate`."""
    spec = spec_from_args(args)
    if spec.disorder_s > 45:
        print(f"warning: --disorder-s {spec.disorder_s:g} exceeds 45 s; late points may fall outside the "
              "engine's re-order window", file=sys.stderr)
    assert spec.hours is not None
    show = args.progress if args.progress is not None else spec.trucks * spec.sites * spec.hours >= 200
    bar = None
    callback = None
    if show:
        total = int(spec.hours * 3600)
        bar = tqdm(total=total, unit="sim-s", file=sys.stderr, desc="simulate", mininterval=0.5)
        last = [0]

        def callback(delivery_ms: int) -> None:
            done = min(total, max(0, (delivery_ms - spec.start_ms) // 1000))
            if done > last[0]:
                bar.update(done - last[0])
                last[0] = done

    started = time.perf_counter()
    try:
        stats = write_simulation(spec, args.out, progress=callback)
    except OSError as exc:
        raise CliError(f"cannot write bundle {args.out}: {exc}") from None
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - started
    print(f"wrote {args.out}: {stats.lines} telemetry lines, {stats.truth_cycles} truth cycles, "
          f"{spec.sites} site(s) x {spec.trucks} trucks x {spec.hours:g} h in {elapsed:.1f} s", file=sys.stderr)
    return 0
