#!/usr/bin/python3
"""The /demo page in real headless Chromium (Debian's chromium + chromium-driver, python3-selenium), against a real
sessions-ws on the offline recognizer, with a LibriVox recording as the microphone
(--use-file-for-fake-audio-capture). One case per run (CTest runs each):

  speak    a page streams the recording: its finals match the reference transcript within the word error rate the
           recognizer reaches on the same recording streamed directly, give or take two words (the browser's
           resampling starts at another phase each run), and the server took every frame the page sent; a
           second page in the room, microphone off, shows the same finals under the first page's name; neither
           console has an error; the server's log never shows the token; screenshot -> ARTIFACTS/demo.png
  expired  a page whose token has expired says so in words (the server's 401 reason) and does not retry
  restart  a connected page shows the 1001 message when the server stops, and reconnects when it is back
  tls      over https:// (the service's own TLS, a throwaway certificate) the page streams over wss://
  subprotocol  a socket opened asking for subprotocols (new WebSocket(url, [...])) opens with the first one asked
           for, as Node's ws answered, and is sent `connected` (Chromium fails the connection if the server names none)

Usage: test_demo.py --build DIR --artifacts DIR --case speak|expired|restart|tls|subprotocol
Every wait is for an event on the page or the server (polled), bounded; none is a bare sleep.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

LIBRIVOX = '/usr/share/pocketsphinx/test/data/librivox/'
RECORDING = 'sense_and_sensibility_01_austen_64kb-0870'
SECRET = 'browser-test-secret'


def fail(message):
    print('FAILED: ' + message, file=sys.stderr)
    sys.exit(1)


def wait_for(what, check, timeout):
    """Polls check() until it returns something truthy; fails with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:  # a page mid-navigation, a server not up yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            fail(f'timed out after {timeout} s waiting for {what}')
        time.sleep(0.05)  # polling interval of the wait, not a wait on its own


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode()


def mint(room, identity, name, exp):
    """A transcription token as the web app mints it (HS256)."""
    header = b64url(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())
    claims = b64url(json.dumps({'sessionSlug': room, 'identity': identity, 'name': name, 'exp': int(exp)}).encode())
    signature = hmac.new(SECRET.encode(), f'{header}.{claims}'.encode(), hashlib.sha256).digest()
    return f'{header}.{claims}.{b64url(signature)}'


def words(text):
    return re.sub(r"[^a-z' ]", ' ', text.lower()).split()


def wer(reference, hypothesis):
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / max(1, len(ref))


def reference_text():
    with open(LIBRIVOX + 'transcription') as f:
        for line in f:
            if f'({RECORDING})' in line:
                return line.split('(')[0].replace('<s>', '').replace('</s>', '').strip()
    fail('no reference transcript for ' + RECORDING)


class Server:
    """sessions-ws on the offline recognizer and SQLite, on a fixed port (so that it can come back on it)."""

    def __init__(self, build, port, data, tls=None):
        self.build, self.port, self.data, self.tls = build, port, data, tls
        self.log_path = os.path.join(data, 'server.log')
        self.proc = None

    def start(self):
        env = dict(os.environ, PORT=str(self.port), HOST='127.0.0.1', TRANSCRIPTION_JWT_SECRET=SECRET,
                   STT_PROVIDER='local', DATABASE_URL=f'sqlite3://db={self.data}/sessions.db',
                   PERSIST_JOURNAL_DIR=f'{self.data}/journal', LOG_LEVEL='debug', SHUTDOWN_TIMEOUT_MS='5000')
        if self.tls:
            env.update(TLS_CERT_FILE=self.tls[0], TLS_KEY_FILE=self.tls[1])
        self.log = open(self.log_path, 'a')
        self.proc = subprocess.Popen([os.path.join(self.build, 'sessions-ws')], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_for('the server to be ready', lambda: self.get('/ready')[0] == 200, 30)

    def get(self, path):
        context = ssl._create_unverified_context() if self.tls else None  # only asks whether it is up
        scheme = 'https' if self.tls else 'http'
        with urllib.request.urlopen(f'{scheme}://127.0.0.1:{self.port}{path}', timeout=5, context=context) as r:
            return r.status, r.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc = None

    def url(self, room, name, token):
        scheme = 'https' if self.tls else 'http'
        return f'{scheme}://localhost:{self.port}/demo?room={room}&name={name}#token={token}'


def browser(microphone=None, trust_any_certificate=False):
    o = webdriver.ChromeOptions()
    o.binary_location = shutil.which('chromium') or '/usr/bin/chromium'
    for a in ['--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
              '--window-size=900,640', '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream']:
        o.add_argument(a)
    if microphone:
        o.add_argument(f'--use-file-for-fake-audio-capture={microphone}%noloop')
    if trust_any_certificate:  # the throwaway certificate of the tls case
        o.add_argument('--ignore-certificate-errors')
    o.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    return webdriver.Chrome(service=Service(shutil.which('chromedriver') or '/usr/bin/chromedriver'), options=o)


def text_of(page, element_id):
    return page.find_element(By.ID, element_id).text


def finals(page):
    return [(li.find_element(By.CLASS_NAME, 'speaker').text, li.find_element(By.CLASS_NAME, 'text').text)
            for li in page.find_elements(By.CSS_SELECTOR, '#finals li')]


def console_errors(page):
    return [e for e in page.get_log('browser') if e.get('level') == 'SEVERE']


def direct_transcript(build, server, wav):
    """The recording streamed straight to the server (sessions-ws-stream, 2x real time): its finals' text."""
    token = mint('direct', 'direct', 'Direct', time.time() + 600)
    out = subprocess.run([os.path.join(build, 'sessions-ws-stream'), '--url', f'ws://127.0.0.1:{server.port}',
                          '--token', token, '--fast', wav], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        fail('sessions-ws-stream failed: ' + out.stderr)
    return ' '.join(line.split('] ', 1)[1] for line in out.stdout.splitlines() if line.startswith('[Direct] '))


def frames_received(server):
    """The audio frames the server has taken so far (GET /metrics, totalMessagesReceived)."""
    return json.loads(server.get('/metrics')[1])['totalMessagesReceived']


def case_speak(build, server, artifacts, workdir):
    wav = os.path.join(workdir, RECORDING + '.wav')
    shutil.copy(LIBRIVOX + RECORDING + '.wav', wav)  # 16-bit PCM WAV, as Chromium's fake capture reads it
    with wave.open(wav) as w:
        seconds = w.getnframes() / w.getframerate()
    reference = reference_text()
    heard_direct = direct_transcript(build, server, wav)
    wer_direct = wer(reference, heard_direct)

    token = mint('demo', 'alice', 'Alice', time.time() + 600)
    viewer_token = mint('demo', 'bob', 'Bob', time.time() + 600)
    viewer, speaker = browser(), browser(wav)
    try:
        viewer.get(server.url('demo', 'Bob', viewer_token))
        speaker.get(server.url('demo', 'Alice', token))
        for page in (viewer, speaker):
            wait_for('the page to connect', lambda: text_of(page, 'connection').startswith('Connected'), 20)
            wait_for('speech-to-text ready', lambda: 'ready' in text_of(page, 'stt'), 20)
        received_before = frames_received(server)
        speaker.find_element(By.ID, 'mic').click()
        wait_for('the microphone to be on', lambda: text_of(speaker, 'mic') == 'Microphone on', 20)
        frames = int(seconds * 50) + 50  # the whole recording, then a second of the silence that follows it
        wait_for(f'{frames} frames sent', lambda: int(speaker.execute_script(
            'return document.body.dataset.framesSent || 0')) >= frames, seconds + 30)
        speaker.find_element(By.ID, 'stop').click()
        wait_for('the page to stop after its last final',
                 lambda: text_of(speaker, 'connection') == 'Stopped: every final is in.', 60)
        spoken = finals(speaker)
        # Every frame the page sent was taken: the word error rate alone would not show a tenth of them lost (it
        # moved by one word when the page skipped every tenth frame).
        sent = int(speaker.execute_script('return document.body.dataset.framesSent || 0'))
        received = frames_received(server) - received_before
        if received != sent:
            fail(f'the page sent {sent} audio frames, the server took {received}')
        wait_for('the viewer to show the same finals', lambda: len(finals(viewer)) >= len(spoken), 20)
        heard_page = ' '.join(text for _, text in spoken)
        wer_page = wer(reference, heard_page)
        print(f'word error rate: direct {wer_direct:.1%}, through the page {wer_page:.1%}')
        print(f'  reference: {reference}\n  direct:    {heard_direct}\n  page:      {heard_page}')
        if not spoken:
            fail('the page shows no final')
        # Chromium's capture and the page's resampler start at another phase each run, and the recognizer hears a
        # word or two differently: over 11 runs the page's rate was direct +0 (8 times), +1 word (2), +2 words (1). A
        # path that loses or mangles audio is far worse than that.
        tolerance = 2 / max(1, len(words(reference)))
        if wer_page > wer_direct + tolerance + 1e-9:
            fail(f'the page\'s word error rate {wer_page:.1%} is more than two words ({tolerance:.1%}) above direct '
                 f'{wer_direct:.1%}')
        if any(name != 'Alice' for name, _ in spoken):
            fail(f'finals not attributed to Alice on her own page: {spoken}')
        if finals(viewer) != spoken:
            fail(f'the viewer shows {finals(viewer)}, the speaker {spoken}')
        if text_of(viewer, 'mic') != 'Start microphone':
            fail('the viewer\'s microphone was turned on')
        os.makedirs(artifacts, exist_ok=True)
        speaker.save_screenshot(os.path.join(artifacts, 'demo.png'))
        for name, page in (('speaker', speaker), ('viewer', viewer)):
            errors = console_errors(page)
            if errors:
                fail(f'the {name} page\'s console has errors: {errors}')
    finally:
        viewer.quit()
        speaker.quit()
    server.stop()
    with open(server.log_path) as f:
        log = f.read()
    if token in log or token.split('.')[2] in log or viewer_token.split('.')[2] in log:
        fail('the server log shows a token')


def case_expired(build, server, artifacts, workdir):
    page = browser()
    try:
        page.get(server.url('demo', 'Carol', mint('demo', 'carol', 'Carol', time.time() - 120)))
        notice = wait_for('the refusal in words', lambda: page.find_element(By.ID, 'notice').is_displayed()
                          and text_of(page, 'notice'), 20)
        print('notice:', notice)
        if 'refused this link’s token' not in notice or 'expired' not in notice:
            fail(f'the notice does not say the token expired: {notice!r}')
        if text_of(page, 'connection') != 'Not connected':
            fail(f'the page goes on trying: {text_of(page, "connection")!r}')
    finally:
        page.quit()


def case_restart(build, server, artifacts, workdir):
    page = browser()
    try:
        page.get(server.url('demo', 'Dave', mint('demo', 'dave', 'Dave', time.time() + 600)))
        wait_for('the page to connect', lambda: text_of(page, 'connection').startswith('Connected'), 20)
        server.stop()
        message = wait_for('the 1001 message', lambda: 'shutting down (1001)' in text_of(page, 'notice')
                           and text_of(page, 'notice'), 20)
        print('while the server is down:', message, '/', text_of(page, 'connection'))
        wait_for('a reconnection attempt', lambda: 'Reconnecting' in text_of(page, 'connection'), 20)
        server.start()
        wait_for('the page to reconnect', lambda: text_of(page, 'connection').startswith('Connected'), 60)
        if page.find_element(By.ID, 'notice').is_displayed():
            fail('the 1001 message stays after the page reconnected')
        wait_for('speech-to-text ready again', lambda: 'ready' in text_of(page, 'stt'), 20)
    finally:
        page.quit()


def case_tls(build, server, artifacts, workdir):
    wav = os.path.join(workdir, RECORDING + '.wav')
    shutil.copy(LIBRIVOX + RECORDING + '.wav', wav)
    page = browser(wav, trust_any_certificate=True)
    try:
        page.get(server.url('demo', 'Erin', mint('demo', 'erin', 'Erin', time.time() + 600)))
        wait_for('the page to connect over TLS', lambda: text_of(page, 'connection').startswith('Connected'), 20)
        wait_for('speech-to-text ready', lambda: 'ready' in text_of(page, 'stt'), 20)
        page.find_element(By.ID, 'mic').click()
        wait_for('a final over wss://', lambda: finals(page), 60)
        scheme = page.execute_script('return location.protocol')
        if scheme != 'https:':
            fail(f'the page was served over {scheme}')
    finally:
        page.quit()


def case_subprotocol(build, server, artifacts, workdir):
    page = browser()
    try:
        page.get(f'http://localhost:{server.port}/demo')  # a page of the server's origin; the probe is its own socket
        token = mint('demo', 'frank', 'Frank', time.time() + 600)
        page.execute_script("""
            window.probe = [];
            const ws = new WebSocket(arguments[0], ['sessions-ws.v1', 'chat']);
            ws.onopen = () => window.probe.push('open:' + ws.protocol);
            ws.onmessage = (e) => window.probe.push('message:' + JSON.parse(e.data).type);
            ws.onerror = () => window.probe.push('error');
            ws.onclose = (e) => window.probe.push('close:' + e.code);
        """, f'ws://localhost:{server.port}/api/realtime/transcribe?token={token}')

        def settled():
            events = page.execute_script('return window.probe')
            ended = any(e == 'error' or e.startswith('close') for e in events)
            return events if 'message:connected' in events or ended else None
        events = wait_for('the socket to open and be sent connected, or to fail', settled, 20)
        print('events:', events)
        if events[0] != 'open:sessions-ws.v1':
            fail(f'the socket did not open with the first subprotocol asked for: {events}')
        if 'message:connected' not in events:
            fail(f'the socket was not sent connected: {events}')
    finally:
        page.quit()


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--build', required=True)
    p.add_argument('--artifacts', required=True)
    p.add_argument('--case', required=True, choices=['speak', 'expired', 'restart', 'tls', 'subprotocol'])
    a = p.parse_args()
    workdir = tempfile.mkdtemp(prefix='sw-browser-')
    # Chromium's own temporary files (its profile lock's socket directory) go there too, and so are removed with it.
    os.environ['TMPDIR'] = workdir
    tls = None
    if a.case == 'tls':
        tls = (os.path.join(workdir, 'cert.pem'), os.path.join(workdir, 'key.pem'))
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost',
                        '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', tls[1], '-out', tls[0]],
                       check=True, capture_output=True)
    server = Server(a.build, free_port(), workdir, tls)
    server.start()
    try:
        {'speak': case_speak, 'expired': case_expired, 'restart': case_restart, 'tls': case_tls,
         'subprotocol': case_subprotocol}[a.case](
            a.build, server, a.artifacts, workdir)
    finally:
        server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    print('passed')


if __name__ == '__main__':
    main()
