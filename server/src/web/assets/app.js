// Small enhancements; every page works without this file.
(function () {
  // Live explanation of a permission string: highlight the granted letters, flag others.
  var letters = document.getElementById('letters');
  document.querySelectorAll('input.perm').forEach(function (input) {
    var note = document.getElementById('perm-check');
    function update() {
      var seen = {}, problems = [];
      input.value.split('').forEach(function (c) {
        if (!letters.querySelector('tr[data-letter="' + c + '"]')) problems.push('"' + c + '" is not a permission letter');
        else if (seen[c]) problems.push('"' + c + '" is repeated');
        seen[c] = true;
      });
      letters.querySelectorAll('tr[data-letter]').forEach(function (row) {
        row.classList.toggle('granted', !!seen[row.getAttribute('data-letter')]);
      });
      if (note) { note.textContent = problems.join('; '); note.className = problems.length ? 'error' : 'note'; }
    }
    input.addEventListener('input', update);
    update();
  });
  // Follow mode: keep the newest lines in sight after each refresh.
  if (document.querySelector('table.text[data-follow]')) window.scrollTo(0, document.body.scrollHeight);
})();
