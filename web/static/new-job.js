/* The new-job page's upload: a dataset goes to POST /v1/datasets (the API takes .zip, .tar and .tar.gz),
   then joins the dataset picker, selected, with the counts the API returned (images kept, files rejected).
   Before uploading, the first images are previewed: image files chosen one by one are shown as they are
   (and packed into a zip here, with the vendored fflate, since the API takes archives); a .zip is opened
   in the browser for its first images. A tar cannot be previewed here. The previews are what the browser
   found, not what the server will keep: it decodes and checks every image itself. */
(function () {
  'use strict';
  const {api, element} = window.dcgan;
  const box = document.querySelector('[data-upload]');
  if (!box) return;
  const fileInput = box.querySelector('[data-upload-file]');
  const nameInput = box.querySelector('[data-upload-name]');
  const button = box.querySelector('[data-upload-button]');
  const status = box.querySelector('[data-upload-status]');
  const thumbnails = box.querySelector('[data-thumbnails]');
  const picker = document.querySelector('[data-dataset-picker]');
  const uploads = picker.querySelector('[data-uploads]');
  const IMAGE_NAME = /\.(png|jpe?g|gif|bmp|webp)$/i;
  const IMAGE_TYPES = {png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', gif: 'image/gif', bmp: 'image/bmp',
                       webp: 'image/webp'};
  const PREVIEW = 8;
  const ZIP_PREVIEW_MAX_BYTES = 64 * 1024 * 1024;  // the browser reads the whole zip to preview it
  let chosen = {kind: null, files: []};

  const isImage = (file) => file.type.startsWith('image/') || IMAGE_NAME.test(file.name);
  const isZip = (file) => /\.zip$/i.test(file.name);
  const isTar = (file) => /\.(tar|tar\.gz|tgz)$/i.test(file.name);

  function say(text, isError) {
    status.textContent = text;
    status.classList.toggle('error', Boolean(isError));
  }

  function thumbnail(blob, caption) {
    const url = URL.createObjectURL(blob);
    const image = element('img', {src: url, alt: caption, title: caption, 'data-thumbnail': true});
    image.addEventListener('load', () => URL.revokeObjectURL(url), {once: true});
    thumbnails.append(image);
  }

  function previewZip(file) {
    if (file.size > ZIP_PREVIEW_MAX_BYTES) {
      say('A large zip: no preview here. The server counts what it keeps when you upload it.');
      return;
    }
    file.arrayBuffer().then((buffer) => {
      let taken = 0;
      const found = fflate.unzipSync(new Uint8Array(buffer), {
        filter: (entry) => IMAGE_NAME.test(entry.name) && !entry.name.endsWith('/') && taken++ < PREVIEW,
      });
      const names = Object.keys(found);
      for (const name of names) {
        const extension = name.split('.').pop().toLowerCase();
        thumbnail(new Blob([found[name]], {type: IMAGE_TYPES[extension]}), name);
      }
      say(names.length
        ? 'The first ' + names.length + ' images in ' + file.name + '. The server checks every member on upload.'
        : 'No image names found in ' + file.name + ' for a preview; the server will say what it makes of it.');
    }).catch(() => say('This browser could not open ' + file.name + ' for a preview; the server will say what it '
                       + 'makes of it on upload.'));
  }

  fileInput.addEventListener('change', () => {
    thumbnails.replaceChildren();
    const files = Array.from(fileInput.files);
    chosen = {kind: null, files};
    if (!files.length) {
      say('');
    } else if (files.every(isImage)) {
      chosen.kind = 'images';
      files.slice(0, PREVIEW).forEach((file) => thumbnail(file, file.name));
      say(files.length + ' image' + (files.length > 1 ? 's' : '') + ' chosen' + (files.length > PREVIEW
        ? ' (the first ' + PREVIEW + ' shown)' : '') + '; they are zipped here and checked by the server.');
    } else if (files.length === 1 && isZip(files[0])) {
      chosen.kind = 'archive';
      previewZip(files[0]);
    } else if (files.length === 1 && isTar(files[0])) {
      chosen.kind = 'archive';
      say('No preview for a tar archive here; the counts appear after the upload.');
    } else {
      say('Choose one archive (.zip, .tar, .tar.gz) or image files.', true);
    }
    button.disabled = chosen.kind === null;
  });

  async function archiveOf(files) {
    const entries = {};
    for (const file of files) {
      let name = file.name;
      for (let n = 2; name in entries; n++) name = n + '-' + file.name;
      entries[name] = [new Uint8Array(await file.arrayBuffer()), {level: 0}];  // images are compressed already
    }
    return new File([fflate.zipSync(entries)], 'images.zip', {type: 'application/zip'});
  }

  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const form = new FormData();
      form.append('file', chosen.kind === 'images' ? await archiveOf(chosen.files) : chosen.files[0]);
      if (nameInput.value.trim()) form.append('name', nameInput.value.trim());
      say('Uploading…');
      const dataset = await api('/v1/datasets', {method: 'POST', body: form});
      const label = dataset.name + ' (' + dataset.num_images + ' images)';
      uploads.append(element('option', {value: dataset.id, text: label}));
      picker.value = dataset.id;
      say('Uploaded “' + dataset.name + '”: ' + dataset.num_images + ' image' + (dataset.num_images === 1 ? '' : 's')
          + ' kept, ' + dataset.num_rejected + ' rejected. It is selected as this job\'s dataset.');
      status.dataset.numImages = dataset.num_images;
      status.dataset.numRejected = dataset.num_rejected;
    } catch (error) {
      const fieldErrors = ((error.problem && error.problem.errors) || []).map((e) => e.field + ': ' + e.message);
      say('Upload refused: ' + (fieldErrors.length ? fieldErrors.join('; ') : error.message), true);
    } finally {
      button.disabled = chosen.kind === null;
    }
  });
})();
