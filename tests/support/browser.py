"""Drives headless Chromium over its DevTools protocol for the dashboard test.

Usage: browser.py CHROMIUM URL SCREENSHOT
Loads URL in a fresh profile, records console errors, exceptions and every request, and talks
to the test over stdin/stdout, one JSON object a line:
  -> {"event": "loaded", "dom": {...}}            once the page has drawn the API's data
  <- {"expect": "text"}                           wait until the page shows "text"
  -> {"event": "shown", "text": "...", "ok": bool, "routers": [...]}
  <- {"set": "id", "value": "v"}                  type into / choose in a form element
  -> {"event": "set"}
  <- {"until": "JS expression"}                   wait until it is true
  -> {"event": "until", "ok": bool, "routers": [...]}
  <- {"shot": true}                               save the screenshot
  -> {"event": "shot"}
  <- {"finish": true}
  -> {"event": "done", "errors": [...], "requests": [...]}   after saving the screenshot
"""
import base64, json, os, subprocess, sys, tempfile, time
import urllib.request

import websocket

chromium, url, screenshot = sys.argv[1], sys.argv[2], sys.argv[3]
profile = tempfile.mkdtemp(prefix="pylon-chromium-")
browser = subprocess.Popen(
    [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
     "--disable-background-networking", "--disable-component-update", "--disable-sync",
     "--disable-default-apps", "--disable-extensions", "--remote-debugging-port=0",
     "--remote-allow-origins=*", "--user-data-dir=" + profile, "about:blank"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


try:
    deadline = time.time() + 30
    active = os.path.join(profile, "DevToolsActivePort")
    while not os.path.exists(active) or os.path.getsize(active) == 0:
        if time.time() > deadline or browser.poll() is not None:
            raise SystemExit("chromium did not start its DevTools endpoint")
        time.sleep(0.05)
    port = open(active).read().split()[0]
    targets = json.load(urllib.request.urlopen("http://127.0.0.1:%s/json/list" % port, timeout=10))
    page = next(t for t in targets if t.get("type") == "page")
    ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)

    errors, requests, pending, counter = [], [], {}, [0]

    def handle(message):
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            errors.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:400])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append("log: " + params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            errors.append("load failed: " + params.get("errorText", ""))

    def call(method, **params):
        counter[0] += 1
        ident = counter[0]
        ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise SystemExit("%s: %s" % (method, message["error"]))
                return message.get("result", {})
            handle(message)

    for domain in ("Runtime", "Log", "Network", "Page"):
        call(domain + ".enable")
    call("Emulation.setDeviceMetricsOverride", width=1280, height=1800, deviceScaleFactor=1, mobile=False)
    call("Page.navigate", url=url)

    def evaluate(expression):
        result = call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    DOM = """JSON.stringify({
      refreshed: Number(document.body.dataset.refreshed || 0),
      routers: [...document.querySelectorAll('#routers tbody tr')].map(r => r.dataset.name),
      replicas: [...document.querySelectorAll('#replicas tbody tr')].map(r => r.dataset.name).filter(Boolean),
      days: [...document.querySelectorAll('#certificates td.days-left')].map(d => d.textContent),
      dayLevels: [...document.querySelectorAll('#certificates td.days-left')].map(d => d.className.trim()),
      certificates: [...document.querySelectorAll('#certificates tbody tr')].map(r => r.dataset.name).filter(Boolean),
      levels: Object.fromEntries([...document.querySelectorAll('#certificates tbody tr')].filter(r => r.dataset.name)
        .map(r => [r.dataset.name, r.querySelector('td.days-left').className.split(' ').filter(c => c && c !== 'days-left').join(' ')])),
      location: location.pathname,
      cards: Object.fromEntries([...document.querySelectorAll('#overview .card')].map(c => [c.id, c.innerText.replace(/\s+/g, ' ').trim()])),
      text: document.body.innerText })"""

    def dom():
        value = evaluate(DOM)
        return json.loads(value) if value else {}

    deadline = time.time() + 20
    state = {}
    while time.time() < deadline:
        state = dom()
        if state.get("refreshed", 0) >= 1:
            break
        time.sleep(0.1)
    say({"event": "loaded", "dom": {k: v for k, v in state.items() if k != "text"}})

    for line in sys.stdin:
        command = json.loads(line)
        if "expect" in command:
            deadline, shown, state = time.time() + 15, False, {}
            while time.time() < deadline and not shown:
                state = dom()
                shown = command["expect"] in state.get("text", "")
                if not shown:
                    time.sleep(0.2)
            say({"event": "shown", "text": command["expect"], "ok": shown, "routers": state.get("routers", [])})
        elif "set" in command:
            evaluate("""(() => { const e = document.getElementById(%s); e.value = %s;
              e.dispatchEvent(new Event('input', { bubbles: true }));
              e.dispatchEvent(new Event('change', { bubbles: true })); })()"""
                     % (json.dumps(command["set"]), json.dumps(command["value"])))
            say({"event": "set"})
        elif "until" in command:
            deadline, ok = time.time() + 15, False
            while time.time() < deadline and not ok:
                ok = bool(evaluate(command["until"]))
                if not ok:
                    time.sleep(0.1)
            say({"event": "until", "ok": ok, "routers": dom().get("routers", [])})
        elif command.get("shot"):
            shot = call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            with open(screenshot, "wb") as out:
                out.write(base64.b64decode(shot["data"]))
            say({"event": "shot"})
        elif command.get("finish"):
            # Drain what arrived meanwhile.
            ws.settimeout(0.5)
            try:
                while True:
                    handle(json.loads(ws.recv()))
            except Exception:
                pass
            say({"event": "done", "errors": errors, "requests": requests})
            break
finally:
    browser.kill()
    browser.wait()
