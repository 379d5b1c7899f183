
function cellKey(row, col) {
  var c = row.cells[col]; var v = c.getAttribute('data-v');
  if (v !== null) { if (v === '') return null; var n = parseFloat(v); if (!isNaN(n)) return n; }
  return c.textContent.trim().toLowerCase();
}
function sortTable(id, col, dir) {
  var t = document.getElementById(id); var body = t.tBodies[0];
  var th = t.tHead.rows[0].cells[col];
  if (!dir) { dir = th.getAttribute('data-dir') === 'asc' ? 'desc' : 'asc'; }
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = cellKey(a, col), y = cellKey(b, col);
    if (x === null && y === null) return 0; if (x === null) return 1; if (y === null) return -1;
    if (typeof x !== typeof y) { x = String(x); y = String(y); }
    var r = x < y ? -1 : (x > y ? 1 : 0); return dir === 'asc' ? r : -r;
  });
  rows.forEach(function (r) { body.appendChild(r); });
  var heads = t.tHead.rows[0].cells;
  for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute('data-dir'); }
  th.setAttribute('data-dir', dir); t.setAttribute('data-sorted-by', col + ':' + dir);
}
window.addEventListener('load', function () {
  var imgs = document.images; var ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);
  var m = /sort=(\d+):(asc|desc)/.exec(window.location.hash);
  if (m) { sortTable('cases', parseInt(m[1], 10), m[2]); }
});
