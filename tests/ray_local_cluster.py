"""A real two-node Ray cluster on 127.0.0.1 for tests/test_ray.py, in a process of its own (the test
process never imports Ray). `ray.cluster_utils.Cluster` starts a head and a second node as separate
raylets; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (set by the caller) keeps every Ray address on loopback
instead of the machine's own network address.

Prints one JSON line {"address", "dashboard"} once both nodes are up, then takes commands on stdin:
`kill-second` loses the second node as a crashed machine would; `stop` (or end of input) shuts down."""
import json
import sys

from ray.cluster_utils import Cluster


def main() -> None:
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 1, "resources": {"slot": 1}, "node_ip_address": "127.0.0.1", "include_dashboard": True,
        "dashboard_host": "127.0.0.1"})
    second = cluster.add_node(num_cpus=1, resources={"slot": 1, "node2": 1}, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address, "dashboard": cluster.webui_url}), flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "kill-second":
                cluster.remove_node(second, allow_graceful=False)
                print(json.dumps({"removed": True}), flush=True)
            elif line.strip() == "stop":
                break
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
