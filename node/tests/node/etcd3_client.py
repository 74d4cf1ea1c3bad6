"""Python's etcd3 client (PyPI `etcd3`) against a raftkv cluster: put, get,
prefix, transactions, a watch and a lease, each checked. Run by
test_etcd_python.rs with the endpoints as arguments: the first is used for
everything but the lease (leases are served by the leader, whose address is
the second argument, as etcd3 talks to one endpoint)."""

import sys
import threading

import etcd3
import etcd3.exceptions


def client(endpoint):
    host, port = endpoint.rsplit(":", 1)
    return etcd3.client(host=host, port=int(port), timeout=20)


def main():
    c = client(sys.argv[1])
    leader = client(sys.argv[2])

    # put and get
    c.put("/py/a", "1")
    value, meta = c.get("/py/a")
    assert value == b"1", value
    assert meta.version == 1, meta.version
    assert c.get("/py/missing") == (None, None)

    # prefix, in key order
    c.put("/py/b", "2")
    c.put("/pz", "not in the prefix")
    got = [(m.key, v) for v, m in c.get_prefix("/py/")]
    assert got == [(b"/py/a", b"1"), (b"/py/b", b"2")], got

    # transactions: the success and the failure branch
    t = c.transactions
    ok, _ = c.transaction(
        compare=[t.value("/py/a") == "1", t.version("/py/b") > 0],
        success=[t.put("/py/a", "3")],
        failure=[],
    )
    assert ok
    assert c.get("/py/a")[0] == b"3"
    ok, responses = c.transaction(
        compare=[t.value("/py/a") == "1"],
        success=[t.put("/py/a", "never")],
        failure=[t.get("/py/b")],
    )
    assert not ok
    [[(value, meta)]] = responses
    assert value == b"2", value

    # a watch sees a put and a delete after it was created
    events, cancel = c.watch_prefix("/py/w/")
    seen = []

    def collect():
        for event in events:
            seen.append((type(event).__name__, event.key, event.value))
            if len(seen) == 2:
                break

    reader = threading.Thread(target=collect)
    reader.start()
    c.put("/py/w/1", "x")
    c.delete("/py/w/1")
    reader.join(20)
    cancel()
    assert seen == [("PutEvent", b"/py/w/1", b"x"), ("DeleteEvent", b"/py/w/1", b"")], seen

    # a lease: keys attached, kept alive, listed, revoked with its keys
    lease = leader.lease(30)
    leader.put("/py/leased", "v", lease=lease)
    refreshed = list(lease.refresh())
    assert refreshed and refreshed[0].TTL > 0, refreshed
    assert 0 < lease.remaining_ttl <= 30, lease.remaining_ttl
    assert lease.keys == [b"/py/leased"], lease.keys
    assert c.get("/py/leased")[0] == b"v"
    lease.revoke()
    assert c.get("/py/leased") == (None, None)

    # a lease whose id the client chooses, granted once
    chosen = leader.lease(30, lease_id=4242)
    assert chosen.id == 4242, chosen.id
    try:
        leader.lease(30, lease_id=4242)
        raise AssertionError("lease 4242 was granted twice")
    except etcd3.exceptions.PreconditionFailedError:
        pass
    chosen.revoke()

    # delete a prefix
    assert c.delete_prefix("/py/").deleted == 2
    print("etcd3 client: all checks passed")


if __name__ == "__main__":
    main()
