// Sign-in form: POST /api/login, then reload so the server serves the app.

const form = document.getElementById("login-form");
const err = document.getElementById("login-error");
const notice = document.getElementById("login-notice");
const submit = document.getElementById("login-submit");

const params = new URLSearchParams(location.search);
if (params.has("expired")) {
  notice.textContent = "Your session has expired. Please sign in again.";
  notice.hidden = false;
}

function showError(msg) {
  err.textContent = msg;
  err.hidden = false;
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  err.hidden = true;
  const username = form.username.value.trim();
  const password = form.password.value;
  if (!username || !password) {
    showError("Enter your username and password.");
    (username ? form.password : form.username).focus();
    return;
  }
  submit.disabled = true;
  submit.textContent = "Signing in…";
  try {
    const resp = await fetch("/api/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Requested-With": "vigil" },
      body: JSON.stringify({ username, password }),
    });
    if (resp.ok) {
      // Same path without ?expired: the server now serves the app for it.
      location.replace(location.pathname);
      return;
    }
    let msg = `Sign-in failed (${resp.status}).`;
    try {
      msg = (await resp.json()).error ?? msg;
    } catch {
      // keep the generic message
    }
    if (resp.status === 401) msg = "Wrong username or password.";
    showError(msg);
    form.password.select();
    form.password.focus();
  } catch {
    showError("Cannot reach the Vigil server. Check your connection and try again.");
  } finally {
    submit.disabled = false;
    submit.textContent = "Sign in";
  }
});
