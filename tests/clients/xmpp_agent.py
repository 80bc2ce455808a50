#!/usr/bin/python3
"""A scriptable XMPP client for the end-to-end tests, built on slixmpp.

The test drives it with one JSON command per line on stdin and reads one JSON
event per line on stdout. It is a real third-party client: stream negotiation,
STARTTLS, SASL, binding, rosters and presence are slixmpp's own code.

    {"cmd": "connect", "jid": "alice@example.test/phone", "password": "pw",
     "host": "127.0.0.1", "port": 5222, "cafile": "/path/xmpp.crt"}
    {"cmd": "presence", "show": "away", "status": "lunch", "priority": 1}
    {"cmd": "presence", "type": "subscribe", "to": "bob@example.test"}
    {"cmd": "message", "to": "bob@example.test", "body": "hi", "type": "chat"}
    {"cmd": "broadcast", "to": ["a@d", "b@d"], "body": "hello all"}
    {"cmd": "roster_get"} / {"cmd": "roster_set", "jid": .., "name": ..}
    {"cmd": "roster_remove", "jid": ..} / {"cmd": "disco_info", "to": ..}
    {"cmd": "raw", "xml": "<message .../>"} / {"cmd": "disconnect"}
    {"cmd": "connect", ..., "trace": true} also emits {"ev": "stanza", "xml": ..}
    for every stanza received.
    {"cmd": "connect", ..., "sm": true} enables stream management (XEP-0198, slixmpp's
    xep_0198 plugin, acknowledgement requested after every stanza, no resumption)
    and emits {"ev": "sm_enabled"} and {"ev": "acked", "id", "name"} for every
    stanza of ours the server acknowledged.

Events: {"ev": "session_start", "jid": ..}, {"ev": "failed_auth"},
{"ev": "disconnected"}, {"ev": "presence", "from", "type", "show", "status",
"priority"}, {"ev": "message", "from", "to", "type", "body", "delay",
"no_store", "error", "error_app", "addresses"}, {"ev": "roster", "ver", "items"},
{"ev": "roster_push", "items"}, {"ev": "iq_result", "id", "xml"}, {"ev": "stream_error", "condition", "text"}.
"""

import asyncio
import json
import logging
import ssl
import sys

import slixmpp
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_ERRORS = "urn:presenced:errors"
NS_ADDRESS = "http://jabber.org/protocol/address"


def emit(**ev):
    sys.stdout.write(json.dumps(ev) + "\n")
    sys.stdout.flush()


def error_of(stanza):
    err = stanza.xml.find("{jabber:client}error")
    if err is None:
        return None, None, None
    cond = app = text = None
    for child in err:
        tag = child.tag
        if tag.startswith("{" + NS_STANZAS + "}"):
            local = tag.split("}", 1)[1]
            if local == "text":
                text = child.text
            else:
                cond = local
        elif tag.startswith("{" + NS_ERRORS + "}"):
            app = tag.split("}", 1)[1]
    return cond, app, text


class Agent(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ignore_pings=False, sm=False):
        super().__init__(jid, password)
        self.register_plugin("xep_0030")
        if sm:
            self.register_plugin("xep_0198", {"window": 1, "allow_resume": False})
            self.add_event_handler("sm_enabled", lambda *_: emit(ev="sm_enabled"))
            self.add_event_handler("sm_failed", lambda *_: emit(ev="sm_failed"))
            self.add_event_handler(
                "stanza_acked",
                lambda st: emit(ev="acked", id=st["id"] if "id" in st.keys() else None,
                                name=st.xml.tag.split("}", 1)[-1]))
        if ignore_pings:
            # A client that reads but never answers the server's pings (and sends no
            # whitespace keepalives): the server must close it after its idle timeout.
            self.whitespace_keepalive = False
            self.register_handler(Callback(
                "swallow pings",
                MatchXPath("{jabber:client}iq/{urn:xmpp:ping}ping"),
                lambda iq: emit(ev="ping_ignored")))
        else:
            self.register_plugin("xep_0199")
        self.auto_authorize = None  # the test decides
        self.auto_subscribe = False
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda *_: emit(ev="failed_auth"))
        self.add_event_handler("disconnected", lambda *_: emit(ev="disconnected"))
        self.add_event_handler("stream_error", self.on_stream_error)
        self.add_event_handler("roster_update", self.on_roster_push)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("presence", self.on_presence)

    async def get_dns_records(self, domain, port=None):
        # Tests connect to explicit addresses: never ask a resolver (no DNS query may
        # leave the machine).
        host, explicit_port = self.address
        return [(domain, host, explicit_port)]

    async def on_start(self, _):
        mech = getattr(self.plugin["feature_mechanisms"], "mech", None)
        emit(ev="session_start", jid=str(self.boundjid),
             mech=None if mech is None else mech.name)

    def on_stream_error(self, err):
        cond = None
        text = None
        for child in err.xml:
            local = child.tag.split("}", 1)[-1]
            if local == "text":
                text = child.text
            else:
                cond = local
        emit(ev="stream_error", condition=cond, text=text)

    def on_roster_push(self, iq):
        items = {}
        for item in iq.xml.iter("{jabber:iq:roster}item"):
            items[item.get("jid")] = {
                "subscription": item.get("subscription"),
                "ask": item.get("ask"),
                "name": item.get("name"),
            }
        emit(ev="roster_push", items=items)

    def on_message(self, msg):
        cond, app, text = error_of(msg)
        delay = msg.xml.find("{urn:xmpp:delay}delay")
        addrs = msg.xml.find("{%s}addresses" % NS_ADDRESS)
        emit(
            ev="message",
            id=msg["id"],
            **{"from": str(msg["from"]), "to": str(msg["to"])},
            type=msg["type"],
            body=msg["body"],
            delay=None if delay is None else delay.get("stamp"),
            no_store=msg.xml.find("{urn:xmpp:hints}no-store") is not None,
            error=cond,
            error_app=app,
            error_text=text,
            addresses=None if addrs is None else [a.get("jid") for a in addrs],
            address_details=None if addrs is None else [
                {"jid": a.get("jid"), "type": a.get("type"), "delivered": a.get("delivered")}
                for a in addrs],
        )

    def on_presence(self, p):
        cond, app, text = error_of(p)
        emit(
            ev="presence",
            **{"from": str(p["from"])},
            type=p["type"],
            show=p["show"],
            status=p["status"],
            priority=p["priority"],
            error=cond,
            error_app=app,
            error_text=text,
        )


async def send_iq(agent, iq, tag):
    try:
        res = await iq.send(timeout=10)
        emit(ev="iq_result", tag=tag, type=res["type"], xml=str(res))
        return res
    except slixmpp.exceptions.IqError as e:
        cond, app, text = error_of(e.iq)
        emit(ev="iq_error", tag=tag, error=cond, error_app=app, error_text=text)
    except slixmpp.exceptions.IqTimeout:
        emit(ev="iq_timeout", tag=tag)
    return None


async def handle(agent_box, cmd):
    c = cmd.get("cmd")
    agent = agent_box.get("a")
    if c == "connect":
        agent = Agent(cmd["jid"], cmd["password"], ignore_pings=bool(cmd.get("ignore_pings")),
                      sm=bool(cmd.get("sm")))
        agent_box["a"] = agent
        ctx = ssl.create_default_context()
        if cmd.get("cafile"):
            ctx.load_verify_locations(cafile=cmd["cafile"])
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        agent.ssl_context = ctx
        if cmd.get("mech"):
            agent.plugin["feature_mechanisms"].use_mech = cmd["mech"]
        if cmd.get("trace"):
            # Every stanza as it arrived, for checks a library would smooth over.
            def trace(stanza):
                x = stanza.xml
                cond, app, text = error_of(stanza)
                kids = []
                for c in x:
                    kids.append(c.tag)
                    kids.extend("  " + g.tag for g in c)
                emit(ev="stanza", name=x.tag.split("}", 1)[-1], type=x.get("type"),
                     id=x.get("id"), **{"from": x.get("from"), "to": x.get("to")},
                     children=kids, error=cond, error_app=app, xml=str(stanza))
                return stanza
            agent.add_filter("in", trace)
        addr = (cmd.get("host", "127.0.0.1"), int(cmd["port"]))
        if cmd.get("direct_tls"):
            agent.connect(addr, use_ssl=True, force_starttls=False, disable_starttls=True)
        else:
            agent.connect(addr, force_starttls=True, disable_starttls=False)
    elif c == "presence":
        kw = {}
        if cmd.get("to"):
            kw["pto"] = cmd["to"]
        if cmd.get("type"):
            kw["ptype"] = cmd["type"]
        if cmd.get("show"):
            kw["pshow"] = cmd["show"]
        if cmd.get("status"):
            kw["pstatus"] = cmd["status"]
        if cmd.get("priority") is not None:
            kw["ppriority"] = cmd["priority"]
        agent.send_presence(**kw)
    elif c == "message":
        m = agent.make_message(mto=cmd["to"], mbody=cmd.get("body"), mtype=cmd.get("type", "chat"))
        if cmd.get("id"):
            m["id"] = cmd["id"]
        m.send()
    elif c == "broadcast":
        m = agent.make_message(mto=cmd.get("server", agent.boundjid.domain), mbody=cmd["body"],
                               mtype=cmd.get("type", "normal"))
        addrs = ET.SubElement(m.xml, "{%s}addresses" % NS_ADDRESS)
        for kind in ("to", "cc", "bcc"):
            for j in cmd.get(kind, []):
                ET.SubElement(addrs, "{%s}address" % NS_ADDRESS, {"type": kind, "jid": j})
        if cmd.get("id"):
            m["id"] = cmd["id"]
        m.send()
    elif c == "roster_get":
        iq = agent.make_iq_get(queryxmlns="jabber:iq:roster")
        if cmd.get("ver") is not None:
            iq.xml.find("{jabber:iq:roster}query").set("ver", cmd["ver"])
        res = await send_iq(agent, iq, cmd.get("tag", "roster"))
        if res is not None:
            q = res.xml.find("{jabber:iq:roster}query")
            items = {}
            ver = None
            if q is not None:
                ver = q.get("ver")
                for item in q.iter("{jabber:iq:roster}item"):
                    items[item.get("jid")] = {
                        "subscription": item.get("subscription"),
                        "ask": item.get("ask"),
                        "name": item.get("name"),
                    }
            emit(ev="roster", ver=ver, items=items, empty=q is None)
    elif c in ("roster_set", "roster_remove"):
        iq = agent.make_iq_set()
        q = ET.SubElement(iq.xml, "{jabber:iq:roster}query")
        attrs = {"jid": cmd["jid"]}
        if c == "roster_remove":
            attrs["subscription"] = "remove"
        elif cmd.get("name"):
            attrs["name"] = cmd["name"]
        ET.SubElement(q, "{jabber:iq:roster}item", attrs)
        await send_iq(agent, iq, cmd.get("tag", c))
    elif c == "disco_info":
        iq = agent.make_iq_get(queryxmlns="http://jabber.org/protocol/disco#info",
                               ito=cmd.get("to", agent.boundjid.domain))
        await send_iq(agent, iq, cmd.get("tag", "disco"))
    elif c == "raw":
        agent.send_raw(cmd["xml"])
    elif c == "disconnect":
        agent.disconnect()
    elif c == "exit":
        return False
    else:
        emit(ev="bad_command", cmd=c)
    return True


async def main():
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    loop = asyncio.get_event_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    box = {}
    emit(ev="ready")
    while True:
        line = await reader.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
            if not await handle(box, cmd):
                break
        except Exception as e:  # report, keep serving
            emit(ev="agent_error", error=repr(e))
    if box.get("a"):
        box["a"].disconnect()
        await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main())
