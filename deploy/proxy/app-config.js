/* OHIF 3.13.2 configuration for lumbar-node behind deploy/proxy/nginx.conf.
 * One data source: the node's own DICOMweb on this same origin (the proxy forwards
 * /dicomweb/ to the node), so the session cookie from /ui/login authenticates the viewer.
 * No local-file, ?url= or dynamic-config sources (OHIF's secure defaults). The node itself
 * writes the same configuration when it serves the viewer under /viewer/
 * (dicom_node/http/viewer.py). */
window.config = {
  name: 'lumbar-node',
  routerBasename: '/',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  groupEnabledModesFirst: true,
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'lumbar-node',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'lumbar-node',
      configuration: {
        friendlyName: 'lumbar-node',
        name: 'lumbar-node',
        wadoUriRoot: window.location.origin + '/dicomweb',
        qidoRoot: window.location.origin + '/dicomweb',
        wadoRoot: window.location.origin + '/dicomweb',
        qidoSupportsIncludeField: true,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
