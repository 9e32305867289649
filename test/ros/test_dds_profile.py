"""The Fast DDS shared-memory profile shipped in config/ (issue 12): well-formed, used by the demo, and it
delivers large best-effort clouds between two processes (the outside client lost > 90% of 10 MB clouds
over the default UDP loopback setup)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from partslip_ros.dds_check import PROFILE_VARIABLES, measure, profile_env

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "config" / "fastdds_shm.xml"
NS = {"dds": "http://www.eprosima.com"}


def test_profile_is_a_default_participant_profile_with_a_large_shared_memory_segment():
    root = ET.parse(PROFILE).getroot()
    transports = {t.findtext("dds:transport_id", namespaces=NS): t
                  for t in root.iterfind(".//dds:transport_descriptor", NS)}
    shm = [t for t in transports.values() if t.findtext("dds:type", namespaces=NS) == "SHM"]
    assert len(shm) == 1 and int(shm[0].findtext("dds:segment_size", namespaces=NS)) >= 32 * 2**20
    participant = root.find(".//dds:participant", NS)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.iterfind(".//dds:userTransports/dds:transport_id", NS)]
    assert set(used) == set(transports) and any(transports[u].findtext("dds:type", namespaces=NS) == "UDPv4"
                                                for u in used)
    assert participant.findtext(".//dds:useBuiltinTransports", namespaces=NS) == "false"


def test_the_demo_uses_the_profile():
    from partslip_ros.demo import params_file, parse_args
    assert parse_args([]).dds_profile is None and params_file("fastdds_shm.xml") == PROFILE
    assert parse_args(["--dds-profile", ""]).dds_profile == ""
    env = profile_env(PROFILE, base={"FASTRTPS_DEFAULT_PROFILES_FILE": "/old.xml"})
    assert env[PROFILE_VARIABLES[0]] == str(PROFILE.resolve()) and PROFILE_VARIABLES[1] not in env
    assert PROFILE_VARIABLES[0] not in profile_env(None, base=env)


@pytest.mark.skipif(os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp",
                    reason="a Fast DDS profile")
def test_large_best_effort_clouds_cross_processes_with_the_profile():
    # Measured: `python -m partslip_ros.dds_check --mb 10 --count 23 --rate 5` on the 2-core VM (shared):
    # default transports 0/23, this profile 23/23 (median 52 ms). One loss is tolerated under CI load.
    result = measure(PROFILE, mb=10.0, count=6, rate=3.0)
    assert result["received"] >= result["sent"] - 1, result
