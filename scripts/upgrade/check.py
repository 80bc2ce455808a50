"""Alice on node 1 and bob on node 3 of a cluster whose nodes run different releases:
they see each other's availability and chat both ways (used by scripts/upgrade-check)."""
import json, subprocess, sys, time, threading, queue
import os
AG=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "clients", "xmpp_agent.py")
RUN=sys.argv[1]  # the old release's .run/local-3node
def agent(name):
    p=subprocess.Popen(["/usr/bin/python3",AG],stdin=subprocess.PIPE,stdout=subprocess.PIPE,stderr=subprocess.DEVNULL,text=True)
    q=queue.Queue()
    threading.Thread(target=lambda:[q.put(json.loads(l)) for l in p.stdout],daemon=True).start()
    return p,q
def send(p,cmd): p.stdin.write(json.dumps(cmd)+"\n"); p.stdin.flush()
def expect(q,pred,what,t=10):
    end=time.time()+t; seen=[]
    while time.time()<end:
        try: e=q.get(timeout=0.2)
        except queue.Empty: continue
        seen.append(e)
        if pred(e): return e
    print("FAIL: no",what,seen); sys.exit(1)
a,aq=agent("alice"); b,bq=agent("bob")
cert=RUN+"/data/node%d/tls/xmpp.crt"
send(a,{"cmd":"connect","jid":"alice@example.test/new","password":"pw-a","host":"127.0.0.1","port":5222,"cafile":cert%1})
send(b,{"cmd":"connect","jid":"bob@example.test/old","password":"pw-b","host":"127.0.0.1","port":5224,"cafile":cert%3})
expect(aq,lambda e:e["ev"]=="session_start","alice session"); expect(bq,lambda e:e["ev"]=="session_start","bob session")
send(a,{"cmd":"presence","show":"away","status":"on new node"}); send(b,{"cmd":"presence","show":"dnd","status":"on old node"})
e=expect(aq,lambda e:e["ev"]=="presence" and e["from"]=="bob@example.test/old" and e["show"]=="dnd","alice sees bob (old node)"); print("alice sees", e["from"], e["show"], e["status"])
e=expect(bq,lambda e:e["ev"]=="presence" and e["from"]=="alice@example.test/new" and e["show"]=="away","bob sees alice (new node)"); print("bob sees", e["from"], e["show"], e["status"])
send(a,{"cmd":"message","to":"bob@example.test","body":"new to old","type":"chat"})
expect(bq,lambda e:e["ev"]=="message" and e["body"]=="new to old","message new->old"); print("new->old message ok")
send(b,{"cmd":"message","to":"alice@example.test","body":"old to new","type":"chat"})
expect(aq,lambda e:e["ev"]=="message" and e["body"]=="old to new","message old->new"); print("old->new message ok")
send(b,{"cmd":"exit"}); expect(aq,lambda e:e["ev"]=="presence" and e["from"]=="bob@example.test/old" and e["type"]=="unavailable","unavailable"); print("bob's logout seen on the new node")
send(a,{"cmd":"exit"})
