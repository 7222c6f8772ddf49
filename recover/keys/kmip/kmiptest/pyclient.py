# Drives PyKMIP's own client (kmip.pie.client.ProxyKmipClient) for
# vmcrypt's tests. Arguments: HOST PORT CA. Reads JSON jobs, one a line, on
# stdin and prints one JSON line of results for each (so one interpreter
# serves a whole test binary). Job: {"cert", "key", "ops": [...]}; each op:
#   {"op": "create", "policy": NAME or null, "activate": bool}  -> {"uid"}
#   {"op": "get", "uid"}                 -> {"key": hex}
#   {"op": "state", "uid"}               -> {"state": "ACTIVE"...}
#   {"op": "activate", "uid"}
#   {"op": "revoke", "uid", "reason": "compromise" | "cessation"}
#   {"op": "destroy", "uid"}
#   {"op": "time_gets", "uids": [...], "rounds": N} -> {"seconds": total}
# An op that fails gives {"error": "..."}; the job goes on.
import binascii
import json
import sys
import time

from kmip import enums
from kmip.pie import client as pie_client


def main():
    host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    for line in sys.stdin:
        job = json.loads(line)
        out = []
        try:
            c = pie_client.ProxyKmipClient(
                hostname=host, port=port, cert=job["cert"], key=job["key"],
                ca=ca, ssl_version="PROTOCOL_TLSv1_2")
            with c:
                for op in job["ops"]:
                    try:
                        out.append(run(c, op))
                    except Exception as e:  # reported to the Go side
                        out.append({"error": "%s: %s" % (type(e).__name__, e)})
        except Exception as e:  # connection failed: every op fails
            out = [{"error": "%s: %s" % (type(e).__name__, e)}] * len(job["ops"])
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


def run(c, op):
    kind = op["op"]
    if kind == "create":
        uid = c.create(enums.CryptographicAlgorithm.AES, 256,
                       operation_policy_name=op.get("policy"))
        if op.get("activate"):
            c.activate(uid)
        return {"uid": uid}
    if kind == "get":
        obj = c.get(op["uid"])
        return {"key": binascii.hexlify(obj.value).decode()}
    if kind == "state":
        _, attrs = c.get_attributes(op["uid"], ["State"])
        return {"state": attrs[0].attribute_value.value.name}
    if kind == "activate":
        c.activate(op["uid"])
        return {}
    if kind == "revoke":
        code = enums.RevocationReasonCode.CESSATION_OF_OPERATION
        if op.get("reason") == "compromise":
            code = enums.RevocationReasonCode.KEY_COMPROMISE
        c.revoke(code, op["uid"])
        return {}
    if kind == "destroy":
        c.destroy(op["uid"])
        return {}
    if kind == "time_gets":
        uids = op["uids"]
        start = time.perf_counter()
        for _ in range(op["rounds"]):
            for uid in uids:
                c.get(uid)
        return {"seconds": time.perf_counter() - start}
    raise ValueError("unknown op " + kind)


main()
